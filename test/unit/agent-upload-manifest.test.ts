/**
 * The chunked-copy manifest (tenant-daemon/agent/upload-manifest.ts) against the shapes and rules
 * of the Go SDK's `CopyManifest` (https://github.com/slicervm/sdk/blob/main/copy_chunked_types.go).
 */
import { expect } from "chai";
import { isPaddockError } from "../../shared/errors.js";
import { chunkFileName, parseCopyManifest, stagingPaths } from "../../tenant-daemon/agent/upload-manifest.js";

const SHA = "ab".repeat(32);

/** What the SDK marshals for a 12-byte file in 4-byte chunks (client_cp_chunked_test.go). */
const sdkManifest = (): Record<string, unknown> => ({
  version: 2,
  mode: "binary",
  destination: "/home/ubuntu/bin/tool",
  uid: 1000,
  gid: 1000,
  permissions: "0755",
  size: 12,
  copy_semantics: "cp-v1",
  source_name: "tool",
  source_type: "file",
  chunks: [0, 1, 2].map((index) => ({ index, size: 4, sha256: SHA })),
});

function refused(m: Record<string, unknown>): string {
  try {
    parseCopyManifest(JSON.stringify(m));
  } catch (err) {
    expect(isPaddockError(err, "ERR_CP_MANIFEST_INVALID"), String(err)).to.equal(true);
    return (err as Error).message;
  }
  throw new Error(`accepted ${JSON.stringify(m)}`);
}

describe("chunked-copy manifest (unit)", () => {
  it("reads the SDK's v2 manifest and names chunks like Go's %06d.chunk", () => {
    const m = parseCopyManifest(JSON.stringify(sdkManifest()));
    expect(m).to.include({ version: 2, mode: "binary", destination: "/home/ubuntu/bin/tool", uid: 1000, gid: 1000, size: 12, sourceName: "tool", sourceType: "file", copyContents: false });
    expect(m.chunks.map((c) => c.size)).to.deep.equal([4, 4, 4]);
    expect([0, 7, 1234567].map(chunkFileName)).to.deep.equal(["000000.chunk", "000007.chunk", "1234567.chunk"]);
  });

  it("refuses what the SDK's Validate refuses, unknown fields and bad names", () => {
    const base = sdkManifest();
    const chunks = base.chunks as Record<string, unknown>[];
    expect(refused({ ...base, version: 3 })).to.contain("version");
    expect(refused({ ...base, chunks: [chunks[1], chunks[0], chunks[2]] })).to.contain("out of sequence");
    expect(refused({ ...base, size: 13 })).to.contain("total");
    expect(refused({ ...base, size: 11 })).to.contain("exceed");
    expect(refused({ ...base, chunks: [{ ...chunks[0], sha256: "xyz" }, chunks[1], chunks[2]] })).to.contain("SHA-256");
    expect(refused({ ...base, chunks: [{ ...chunks[0], size: 0 }, chunks[1], chunks[2]] })).to.contain("invalid size");
    expect(refused({ ...base, source_name: "../x" })).to.contain("source_name");
    expect(refused({ ...base, source_type: "directory" })).to.contain("tar mode");
    expect(refused({ ...base, copy_semantics: "" })).to.contain("copy_semantics");
    expect(refused({ ...base, extra: 1 })).to.contain("unknown field");
    expect(refused({ ...base, permissions: "rwx" })).to.contain("permissions");
    expect(refused({ ...base, uid: -1 })).to.contain("uid");
  });

  it("accepts only <dir>/.slicer-upload-<32 hex>/manifest.json as a manifest path", () => {
    const ok = `/home/u/.slicer-upload-${"0f".repeat(16)}/manifest.json`;
    expect(stagingPaths(ok)).to.deep.equal({ sessionDir: ok.slice(0, -"/manifest.json".length), manifest: ok, chunksDir: `${ok.slice(0, -"/manifest.json".length)}/chunks` });
    for (const bad of ["/etc/passwd", "/home/u/manifest.json", `/home/u/.slicer-upload-${"0F".repeat(16)}/manifest.json`, `/home/u/.slicer-upload-${"0f".repeat(16)}/other.json`, `/home/u/.slicer-upload-${"0f".repeat(16)}/../manifest.json`]) {
      expect(() => stagingPaths(bad), bad).to.throw(/not a chunked-copy manifest path/);
    }
  });
});
