import { expect } from "chai";
import { promises as fs } from "node:fs";
import path from "node:path";
import { ERROR_CODES, PaddockError, errorResponse } from "../../shared/errors.js";
import { PROJECT_ROOT } from "../helpers/daemon.js";

describe("error codes (shared/errors.ts and docs/error-codes.md)", () => {
  it("docs/error-codes.md lists every code with its status, and nothing else", async () => {
    const doc = await fs.readFile(path.join(PROJECT_ROOT, "docs/error-codes.md"), "utf8");
    const rows = [...doc.matchAll(/^\| `(ERR_[A-Z_]+)` \| (\d{3}) \|$/gm)].map((m) => [m[1], Number(m[2])]);
    expect(Object.fromEntries(rows)).to.deep.equal({ ...ERROR_CODES });
  });
  it("codes follow ERR_<AREA>_<WHAT>", () => {
    for (const code of Object.keys(ERROR_CODES)) expect(code).to.match(/^ERR_[A-Z]+(_[A-Z]+)*$/);
  });
  it("client errors keep message and code; server errors become a generic 500", () => {
    expect(errorResponse(new PaddockError("ERR_VM_NOT_FOUND", "VM not found"))).to.deep.equal({ status: 404, body: { error: "VM not found", code: "ERR_VM_NOT_FOUND" } });
    expect(errorResponse(new Error("secret path /etc/x"))).to.deep.equal({ status: 500, body: { error: "internal error", code: "ERR_INTERNAL" } });
  });
});
