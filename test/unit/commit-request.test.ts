/**
 * tenant-daemon/vm/commit-request.ts: the cold-fork bodies and queries in the Go SDK's shapes
 * (https://github.com/slicervm/sdk types.go), their defaults from the commit, and the codes of
 * bad fields.
 */
import { expect } from "chai";
import { isPaddockError } from "../../shared/errors.js";
import type { HostGroupConfig } from "../../shared/tenant-config.js";
import type { CommitRecord } from "../../tenant-daemon/storage/commit-store.js";
import { matchesCommitFilter, parseCommitListQuery, parseCommitRequest, parseForkRequest } from "../../tenant-daemon/vm/commit-request.js";

const MiB = 2 ** 20;
const group = { name: "sbox", vcpu: 2, ramBytes: 512 * MiB, network: { mode: "isolated" } } as unknown as HostGroupConfig;
const commit: CommitRecord = {
  schemaVersion: 1, commitId: "cmt-0123456789abcdef", sourceHostname: "sbox-1", sourceHostGroup: "sbox", createdAt: "2026-01-01T00:00:00Z",
  mode: "disk", tags: ["a"], labels: {}, cacheKey: "", image: "debian-12", storageSizeBytes: 128 * MiB, allocatedBytes: MiB,
  source: { cpus: 1, ramBytes: 256 * MiB, tags: ["name=origin", "src=1"], secrets: ["s1"], network: { drop: ["198.18.0.0/15"] } },
};

function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    if (isPaddockError(err)) return err.code;
    throw err;
  }
  return "none";
}

describe("cold-fork requests", () => {
  it("a commit body: tags, labels, a trimmed cache_key; no body is all empty", () => {
    expect(parseCommitRequest(undefined)).to.deep.equal({ tags: [], labels: {}, cacheKey: "" });
    expect(parseCommitRequest({ tags: ["x", "x"], labels: { k: "v" }, cache_key: " key " })).to.deep.equal({ tags: ["x"], labels: { k: "v" }, cacheKey: "key" });
    expect(codeOf(() => parseCommitRequest({ labels: { k: 1 } }))).to.equal("ERR_COMMIT_INVALID_REQUEST");
    expect(codeOf(() => parseCommitRequest({ cache_key: "a\nb" }))).to.equal("ERR_COMMIT_INVALID_REQUEST");
    expect(codeOf(() => parseCommitRequest([]))).to.equal("ERR_COMMIT_INVALID_REQUEST");
  });

  it("list filters: repeated tag (all must match), cache_key, source, mode", () => {
    const f = parseCommitListQuery({ tag: ["a", "b"], source: "sbox-1" });
    expect(f).to.deep.equal({ tags: ["a", "b"], cacheKey: undefined, source: "sbox-1", mode: undefined });
    expect(matchesCommitFilter(commit, f)).to.equal(false);
    expect(matchesCommitFilter(commit, parseCommitListQuery({ tag: "a", mode: "disk" }))).to.equal(true);
    expect(codeOf(() => parseCommitListQuery({ source: ["a", "b"] }))).to.equal("ERR_QUERY_INVALID");
  });

  it("a fork without a body inherits the source's size, tags (not its name=), secrets and network; persistent; every fix-up", () => {
    expect(parseForkRequest({ wait: undefined, timeout: undefined }, undefined, group, commit)).to.deep.equal({
      wait: "agent", timeoutMs: 300_000, cpus: 1, ramBytes: 256 * MiB, persistent: true, tags: ["src=1"], secrets: ["s1"],
      network: { drop: ["198.18.0.0/15"] }, fixups: ["hostname", "machine-id", "ssh-host-keys"],
    });
  });

  it("every fork field is honoured", () => {
    const r = parseForkRequest({ wait: "none", timeout: "30s" }, {
      vcpu: 2, ram_bytes: 128 * MiB, persistent: false, tags: ["t"], tag_mode: "replace", secrets: [], network: { allow: [] }, fixups: ["hostname"],
    }, group, commit);
    expect(r).to.deep.equal({
      wait: "none", timeoutMs: 30_000, cpus: 2, ramBytes: 128 * MiB, persistent: false, tags: ["t"], secrets: [],
      network: { drop: ["198.18.0.0/15"], allow: [] }, fixups: ["hostname"],
    });
  });

  it("bad fork fields get their codes", () => {
    const q = { wait: undefined, timeout: undefined };
    expect(codeOf(() => parseForkRequest(q, { fixups: [] }, group, commit))).to.equal("ERR_FIELD_UNSUPPORTED");
    expect(codeOf(() => parseForkRequest(q, { fixups: ["hostname", "x"] }, group, commit))).to.equal("ERR_COMMIT_INVALID_REQUEST");
    expect(codeOf(() => parseForkRequest(q, { vcpu: 3 }, group, commit))).to.equal("ERR_VM_SIZE_EXCEEDED");
    expect(codeOf(() => parseForkRequest(q, { vcpu: -1 }, group, commit))).to.equal("ERR_COMMIT_INVALID_REQUEST");
    expect(codeOf(() => parseForkRequest(q, { tag_mode: "x" }, group, commit))).to.equal("ERR_COMMIT_INVALID_REQUEST");
    expect(codeOf(() => parseForkRequest(q, { hostname: "h" }, group, commit))).to.equal("ERR_COMMIT_INVALID_REQUEST");
    expect(codeOf(() => parseForkRequest({ wait: "userdata", timeout: undefined }, {}, group, commit))).to.equal("ERR_QUERY_INVALID");
    const bridge = { ...group, network: { mode: "bridge" } } as unknown as HostGroupConfig;
    expect(codeOf(() => parseForkRequest(q, { network: { allow: [] } }, bridge, commit))).to.equal("ERR_COMMIT_INVALID_REQUEST");
  });
});
