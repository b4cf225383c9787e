/**
 * Friendly names (`name=<label>` tags, as Slicer's CLI and Go SDK use them:
 * https://github.com/slicervm/sdk README, "A CLI-friendly name is the ordinary, unique
 * `name=<value>` tag") on a real tenant daemon with real runc VMs and a warm pool: checked to be
 * one DNS label at create, unique in the tenant (concurrent creates included), never a VM's
 * hostname nor one the daemon may hand out, settable by a tags PATCH on a VM without one, and
 * immutable once set.
 */
import { expect } from "chai";
import { run } from "../../shared/exec.js";
import { TestDaemon, randomIsolatedRange } from "../helpers/daemon.js";
import type { TestResponse } from "../helpers/http.js";

interface Node { hostname: string; tags: string[] }

describe("friendly names: name= tags (privileged, real daemon and runc)", function () {
  this.timeout(180_000);
  let d: TestDaemon;

  before(async () => {
    d = await TestDaemon.create({
      hostGroups: [{ name: "sbox", count: 0, vcpu: 1, ram_mb: 256, storage: "image", storage_size: "128M", network: { mode: "isolated", range: randomIsolatedRange() } }],
      paddock: { warm_pool: { sbox: 1 } },
    });
    await d.start();
  });

  after(async () => {
    await d?.destroy();
    const left = (await run("runc", ["list", "-q"])).stdout.split("\n").filter((id) => id.startsWith(`pdk-${d.tenantId}-`));
    expect(left, "runc containers left").to.deep.equal([]);
  });

  const nodes = async (): Promise<Node[]> => (await d.get("/nodes")).json as Node[];
  const create = (tags: string[]): Promise<TestResponse> => d.post("/hostgroup/sbox/nodes", { tags });
  const refused = (r: TestResponse, status: number, code: string): void => {
    expect(r.status, r.text).to.equal(status);
    expect(r.json, r.text).to.include({ code });
  };
  let web = "";
  let plain = "";

  it("a create with name=<label> keeps the tag; the name finds the VM", async () => {
    const r = await create(["name=web", "role=ci"]);
    expect(r.status, r.text).to.equal(201);
    web = (r.json as { hostname: string }).hostname;
    expect((await d.get(`/vm/${web}/tags`)).json).to.deep.equal({ hostname: web, tags: ["name=web", "role=ci"] });
    expect(((await d.get("/nodes?tag=name%3Dweb")).json as Node[]).map((n) => n.hostname)).to.deep.equal([web]);
  });

  it("refuses a name that is not a DNS label, or two names, with 400 ERR_VM_NAME_INVALID and creates nothing", async () => {
    const before = (await nodes()).length;
    for (const tags of [["name=Web_1"], ["name=-web"], ["name="], [`name=${"a".repeat(64)}`], ["name=a", "name=b"]]) {
      refused(await create(tags), 400, "ERR_VM_NAME_INVALID");
    }
    expect((await nodes()).length).to.equal(before);
  });

  it("refuses a name another VM has, a VM's hostname, or a hostname the daemon may hand out, with 409 ERR_VM_NAME_TAKEN", async () => {
    const before = (await nodes()).length;
    for (const tags of [["name=web"], [`name=${web}`], ["name=sbox-99"]]) {
      const r = await create(tags);
      refused(r, 409, "ERR_VM_NAME_TAKEN");
    }
    expect((await nodes()).length).to.equal(before);
    // `sbox-07` is no hostname the daemon hands out (indexes have no leading zeros): a free name.
    const padded = await create(["name=sbox-07"]);
    expect(padded.status, padded.text).to.equal(201);
    expect((await d.del(`/hostgroup/sbox/nodes/${(padded.json as { hostname: string }).hostname}`)).status).to.equal(200);
  });

  it("of concurrent creates with one name, exactly one gets it", async () => {
    const rs = await Promise.all([0, 1, 2].map(() => create(["name=race"])));
    expect(rs.map((r) => r.status).sort(), rs.map((r) => r.text).join("\n")).to.deep.equal([201, 409, 409]);
    for (const r of rs.filter((x) => x.status === 409)) expect(r.json).to.include({ code: "ERR_VM_NAME_TAKEN" });
    const holders = (await nodes()).filter((n) => n.tags.includes("name=race"));
    expect(holders).to.have.length(1);
    expect((await d.del(`/hostgroup/sbox/nodes/${(holders[0] as Node).hostname}`)).status).to.equal(200);
  });

  it("a tags PATCH gives a name to a VM without one; the name is then immutable", async () => {
    const r = await create(["role=db"]);
    expect(r.status, r.text).to.equal(201);
    plain = (r.json as { hostname: string }).hostname;
    refused(await d.patch(`/vm/${plain}/tags`, { add: ["name=web"] }), 409, "ERR_VM_NAME_TAKEN");
    refused(await d.patch(`/vm/${plain}/tags`, { add: ["name=DB"] }), 400, "ERR_VM_NAME_INVALID");
    expect((await d.get(`/vm/${plain}/tags`)).json, "refused patches changed nothing").to.deep.equal({ hostname: plain, tags: ["role=db"] });
    const ok = await d.patch(`/vm/${plain}/tags`, { add: ["name=db"] });
    expect(ok.status, ok.text).to.equal(200);
    expect(ok.json).to.deep.equal({ hostname: plain, tags: ["role=db", "name=db"] });
    refused(await d.patch(`/vm/${plain}/tags`, { add: ["name=db2"] }), 400, "ERR_TAGS_INVALID");
    refused(await d.patch(`/vm/${plain}/tags`, { remove: ["name=db"] }), 400, "ERR_TAGS_INVALID");
    refused(await d.patch(`/vm/${plain}/tags`, { replace: ["name=db2"] }), 400, "ERR_TAGS_INVALID");
    const replaced = await d.patch(`/vm/${plain}/tags`, { replace: ["role=primary"] });
    expect(replaced.json, "replace keeps the name").to.deep.equal({ hostname: plain, tags: ["name=db", "role=primary"] });
    refused(await create(["name=db"]), 409, "ERR_VM_NAME_TAKEN");
  });

  it("a deleted VM's name is free again", async () => {
    expect((await d.del(`/hostgroup/sbox/nodes/${web}`)).status).to.equal(200);
    const r = await create(["name=web"]);
    expect(r.status, r.text).to.equal(201);
  });
});
