import { readFileSync } from "node:fs";
import { expect } from "chai";
import { PADDOCK_VERSION } from "../../shared/version.js";

describe("shared/version.ts", () => {
  it("PADDOCK_VERSION is package.json's version", () => {
    const pkg = JSON.parse(readFileSync(new URL("../../../package.json", import.meta.url), "utf8")) as { version: string };
    expect(PADDOCK_VERSION).to.equal(pkg.version);
  });
});
