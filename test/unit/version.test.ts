import { readFileSync } from "node:fs";
import { expect } from "chai";
import { fileURLToPath } from "node:url";
import { PADDOCK_VERSION } from "../../shared/version.js";
import { BUILD_INFO_FILE, buildVersion, parseBuildInfo, readBuildVersion } from "../../shared/build-info.js";
import { entryBuildVersion } from "../../supervisor/daemon-process.js";

describe("shared/version.ts", () => {
  it("PADDOCK_VERSION is package.json's version", () => {
    const pkg = JSON.parse(readFileSync(new URL("../../../package.json", import.meta.url), "utf8")) as { version: string };
    expect(PADDOCK_VERSION).to.equal(pkg.version);
  });
});

describe("shared/build-info.ts (dist/build-info.json, scripts/build-info.ts)", () => {
  it("the build wrote build-info.json: package.json's version and a 12-hex build id", () => {
    const pkg = JSON.parse(readFileSync(new URL("../../../package.json", import.meta.url), "utf8")) as { version: string };
    const info = parseBuildInfo(readFileSync(new URL(`../../${BUILD_INFO_FILE}`, import.meta.url), "utf8"));
    expect(info?.version).to.equal(pkg.version);
    expect(info?.build).to.match(/^[0-9a-f]{12}$/);
    expect(readBuildVersion(fileURLToPath(new URL("../..", import.meta.url)))).to.equal(`${pkg.version}+${info?.build}`);
    // A daemon entry of this build names the same build (supervisor/daemon-process.ts).
    expect(entryBuildVersion(fileURLToPath(new URL("../../tenant-daemon/launch.js", import.meta.url)))).to.equal(`${pkg.version}+${info?.build}`);
  });

  it("refuses what is not a build-info and joins version and build semver-style", () => {
    expect(parseBuildInfo('{"version":"0.1.0","build":"0123456789ab"}')).to.deep.equal({ version: "0.1.0", build: "0123456789ab" });
    for (const bad of ["", "{", "null", '{"version":"0.1.0"}', '{"version":"0.1.0","build":"XYZ"}', '{"version":"0.1.0","build":"0123456789abc"}', '{"version":"a b","build":"0123456789ab"}']) expect(parseBuildInfo(bad), bad).to.equal(undefined);
    expect(buildVersion({ version: "0.1.0", build: "0123456789ab" })).to.equal("0.1.0+0123456789ab");
    expect(readBuildVersion("/nonexistent-pdk")).to.equal(undefined);
    expect(entryBuildVersion("/nonexistent-pdk/dist/tenant-daemon/launch.js")).to.equal(undefined);
  });
});
