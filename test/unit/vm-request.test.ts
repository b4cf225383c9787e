import { expect } from "chai";
import { PaddockError } from "../../shared/errors.js";
import type { HostGroupConfig } from "../../shared/tenant-config.js";
import {
  applyTagPatch, friendlyNameOf, matchesTagFilter, parseCreateVmRequest, parseTagFilter, parseTagPatch, parseWaitQuery,
} from "../../tenant-daemon/vm/vm-request.js";

const group: HostGroupConfig = {
  name: "sbox", count: 0, vcpu: 2, ramBytes: 4 * 2 ** 30, storage: "image", storageSizeBytes: 2 ** 30, persistent: false,
  userdata: undefined, userdataFile: undefined, dnsServers: [], gpuCount: 0, network: { mode: "isolated", range: undefined, drop: [], allow: [] },
  expiry: { action: "shutdown", defaultTtlMs: undefined, maxTtlMs: undefined },
  egressProxy: undefined,
};

function code(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).to.be.instanceOf(PaddockError);
    return (err as PaddockError).code;
  }
  return "no error";
}

describe("VM create request (VM size at launch)", () => {
  it("omitted sizes get the host group's defaults", () => {
    expect(parseCreateVmRequest({}, group)).to.include({ cpus: 2, ramBytes: 4 * 2 ** 30, persistent: false });
  });
  it("persistent defaults to the host group's, and the body's value wins", () => {
    const keep = { ...group, persistent: true };
    expect(parseCreateVmRequest({}, keep)).to.include({ persistent: true });
    expect(parseCreateVmRequest({ persistent: false }, keep)).to.include({ persistent: false });
    expect(parseCreateVmRequest({ persistent: true }, group)).to.include({ persistent: true });
  });
  it("smaller sizes are honoured as-is, zero means default", () => {
    expect(parseCreateVmRequest({ cpus: 1, ram_bytes: 2 ** 30 }, group)).to.include({ cpus: 1, ramBytes: 2 ** 30 });
    expect(parseCreateVmRequest({ cpus: 0, ram_bytes: 0 }, group)).to.include({ cpus: 2, ramBytes: 4 * 2 ** 30 });
  });
  it("larger sizes are a 400", () => {
    expect(code(() => parseCreateVmRequest({ cpus: 8 }, group))).to.equal("ERR_VM_SIZE_EXCEEDED");
    expect(code(() => parseCreateVmRequest({ ram_bytes: 16 * 2 ** 30 }, group))).to.equal("ERR_VM_SIZE_EXCEEDED");
  });
  it("wrong types and negative sizes are 400s", () => {
    expect(code(() => parseCreateVmRequest({ cpus: "2" }, group))).to.equal("ERR_VM_INVALID_REQUEST");
    expect(code(() => parseCreateVmRequest({ cpus: -1 }, group))).to.equal("ERR_VM_INVALID_REQUEST");
    expect(code(() => parseCreateVmRequest({ tags: [1] }, group))).to.equal("ERR_TAGS_INVALID");
    expect(code(() => parseCreateVmRequest({ persistent: "yes" }, group))).to.equal("ERR_VM_INVALID_REQUEST");
    expect(code(() => parseCreateVmRequest([], group))).to.equal("ERR_VM_INVALID_REQUEST");
    expect(code(() => parseCreateVmRequest({ tags: ["x".repeat(1024 * 1024)] }, group))).to.equal("ERR_TAGS_INVALID");
  });
  it("ip: bare or CIDR form, passed on bare; anything else is a 400", () => {
    expect(parseCreateVmRequest({}, group).ip).to.equal(undefined);
    expect(parseCreateVmRequest({ ip: "169.254.100.6" }, group).ip).to.equal("169.254.100.6");
    expect(parseCreateVmRequest({ ip: "169.254.100.6/30" }, group).ip).to.equal("169.254.100.6");
    for (const ip of ["10.0.0", "10.0.0.256", "10.0.0.1/33", "::1", 7, "x"]) expect(code(() => parseCreateVmRequest({ ip }, group))).to.equal("ERR_VM_INVALID_REQUEST");
  });
  it("ignores unknown fields", () => {
    expect(parseCreateVmRequest({ hostname: "evil", count: 3 }, group).cpus).to.equal(2);
  });
  it("per-VM network overrides keep absent vs empty lists apart", () => {
    expect(parseCreateVmRequest({ network: { allow: [] } }, group).network).to.deep.equal({ allow: [] });
    const bridge = { ...group, network: { mode: "bridge" as const, bridge: undefined, tapPrefix: undefined, gateway: "10.0.0.1/24", range: undefined, addresses: [] } };
    expect(code(() => parseCreateVmRequest({ network: { allow: [] } }, bridge))).to.equal("ERR_VM_INVALID_REQUEST");
  });
});

describe("wait and timeout", () => {
  it("accepts agent, userdata and Go durations; default 5m", () => {
    expect(parseWaitQuery("agent", "2m0s")).to.deep.equal({ wait: "agent", timeoutMs: 120_000 });
    expect(parseWaitQuery("userdata", "60s")).to.deep.equal({ wait: "userdata", timeoutMs: 60_000 });
    expect(parseWaitQuery(undefined, undefined)).to.deep.equal({ wait: undefined, timeoutMs: 300_000 });
  });
  it("rejects other wait values and bad durations", () => {
    expect(code(() => parseWaitQuery("ready", undefined))).to.equal("ERR_QUERY_INVALID");
    expect(code(() => parseWaitQuery("agent", "5 minutes"))).to.equal("ERR_QUERY_INVALID");
  });
});

describe("tags (stable identity)", () => {
  it("filters exact and by prefix; both at once is a 400", () => {
    expect(matchesTagFilter(["user=alice"], parseTagFilter("user=alice", undefined))).to.equal(true);
    expect(matchesTagFilter(["user=alice"], parseTagFilter("user=al", undefined))).to.equal(false);
    expect(matchesTagFilter(["user=alice"], parseTagFilter(undefined, "user="))).to.equal(true);
    expect(code(() => parseTagFilter("a", "b"))).to.equal("ERR_QUERY_INVALID");
  });
  it("patches add/remove/replace and keeps name= immutable", () => {
    expect(applyTagPatch(["name=x", "a"], parseTagPatch({ add: ["b"], remove: ["a"] }))).to.deep.equal(["name=x", "b"]);
    expect(applyTagPatch(["name=x", "a"], parseTagPatch({ replace: [] }))).to.deep.equal(["name=x"]);
    expect(code(() => parseTagPatch({ replace: ["a"], add: ["b"] }))).to.equal("ERR_TAGS_INVALID");
    expect(code(() => applyTagPatch(["name=x"], parseTagPatch({ add: ["name=y"] })))).to.equal("ERR_TAGS_INVALID");
    expect(code(() => applyTagPatch(["name=x"], parseTagPatch({ replace: ["name=y", "a"] })))).to.equal("ERR_TAGS_INVALID");
    expect(code(() => parseTagPatch({ remove: ["name=x"] }))).to.equal("ERR_TAGS_INVALID");
    expect(code(() => parseTagPatch({}))).to.equal("ERR_TAGS_INVALID");
  });
  it("a patch may give a name= tag to a VM without one, or repeat the one it has", () => {
    expect(applyTagPatch(["a"], parseTagPatch({ add: ["name=web"] }))).to.deep.equal(["a", "name=web"]);
    expect(applyTagPatch(["a"], parseTagPatch({ replace: ["name=web", "b"] }))).to.deep.equal(["name=web", "b"]);
    expect(applyTagPatch(["name=web", "a"], parseTagPatch({ replace: ["name=web", "b"] }))).to.deep.equal(["name=web", "b"]);
    expect(applyTagPatch(["name=web"], parseTagPatch({ add: ["name=web"] }))).to.deep.equal(["name=web"]);
    expect(code(() => parseTagPatch({ add: ["name=a", "name=b"] }))).to.equal("ERR_VM_NAME_INVALID");
    expect(code(() => parseTagPatch({ add: ["name=Web_1"] }))).to.equal("ERR_VM_NAME_INVALID");
  });
  it("a friendly name is one DNS label, at most one per VM", () => {
    for (const ok of ["a", "web-1", "0x", "a".repeat(63)]) expect(friendlyNameOf([`name=${ok}`, "x"]), ok).to.equal(ok);
    expect(friendlyNameOf(["user=a"])).to.equal(undefined);
    for (const bad of ["", "-a", "a-", "A", "a.b", "a_b", "a b", "a".repeat(64), "é"]) {
      expect(code(() => friendlyNameOf([`name=${bad}`])), JSON.stringify(bad)).to.equal("ERR_VM_NAME_INVALID");
    }
    expect(code(() => friendlyNameOf(["name=a", "name=b"]))).to.equal("ERR_VM_NAME_INVALID");
    expect(code(() => parseCreateVmRequest({ tags: ["name=a", "name=b"] }, group))).to.equal("ERR_VM_NAME_INVALID");
    expect(parseCreateVmRequest({ tags: ["name=a", "name=a"] }, group).tags).to.deep.equal(["name=a"]);
  });
});

describe("create fields Paddock cannot honour", () => {
  it("disk_image, ssh_keys, import_user and github_user are refused with ERR_FIELD_UNSUPPORTED naming the field; empty values pass", () => {
    for (const [field, value] of [["disk_image", "img"], ["ssh_keys", ["ssh-ed25519 AAAA x"]], ["import_user", "alex"], ["github_user", "alex"], ["ssh_keys", "not-a-list"]] as const) {
      let err: unknown;
      try {
        parseCreateVmRequest({ [field]: value }, group);
      } catch (e) {
        err = e;
      }
      expect(err, field).to.be.instanceOf(PaddockError).with.property("code", "ERR_FIELD_UNSUPPORTED");
      expect((err as PaddockError).status).to.equal(501);
      expect((err as PaddockError).message.startsWith(`${field}:`)).to.equal(true);
    }
    expect(parseCreateVmRequest({ disk_image: "", ssh_keys: [], import_user: null, github_user: "" }, group).cpus).to.equal(2);
  });
});
