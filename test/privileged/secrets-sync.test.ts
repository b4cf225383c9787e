/**
 * Secret changes reach running VMs (docs/slicer-api.md#secrets): against a real daemon with two
 * real runc VMs, one granted the secret `live` and one granted only `unrelated`. POST, PATCH and
 * DELETE on `/secrets` show up in the granted VM with content, mode, uid and gid; a change made
 * while the VM is paused arrives on resume; the VM not granted `live` never gets it.
 */
import { expect } from "chai";
import { run } from "../../shared/exec.js";
import { TestDaemon, randomIsolatedRange } from "../helpers/daemon.js";
import { call } from "../integration/agent-fixture.js";

/** What `stat` and `cat` show for the secret `live` in a VM, or "absent". */
const SHOW_LIVE = "f=/run/slicer/secrets/live; if [ -e $f ]; then stat -c '%a %u %g' $f; cat $f; else echo absent; fi";

describe("secrets sync into running VMs (privileged)", function () {
  let d: TestDaemon;
  let granted = "";
  let other = "";

  const sh = async (h: string, script: string): Promise<string> => {
    const r = await call(d.socketPath, "POST", `/vm/${h}/exec?cmd=/bin/sh&args=-c&args=${encodeURIComponent(script)}&uid=0&buffered=true`);
    expect(r.status, r.text).to.equal(200);
    return String((r.json() as { stdout: unknown }).stdout);
  };

  /**
   * Poll `h` until {@link SHOW_LIVE} prints `want`; the pushes are asynchronous to the API answer.
   * Fails with the last output after 10 s (a bound for a loaded host, not a speed check).
   */
  const until = async (h: string, want: string): Promise<void> => {
    const deadline = Date.now() + 10_000;
    let got = "";
    while (Date.now() < deadline) {
      got = await sh(h, SHOW_LIVE);
      if (got === want) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(got, `secret in ${h}`).to.equal(want);
  };

  const secrets = (method: string, path: string, body?: unknown) =>
    call(d.socketPath, method, path, body === undefined ? {} : { body: JSON.stringify(body) });

  before(async function () {
    d = await TestDaemon.create({
      hostGroups: [{ name: "sbox", count: 0, vcpu: 1, ram_mb: 256, storage: "image", storage_size: "256M", network: { mode: "isolated", range: randomIsolatedRange() } }],
    });
    await d.start();
    for (const [grant, set] of [["live", (h: string) => (granted = h)], ["unrelated", (h: string) => (other = h)]] as const) {
      const r = await call(d.socketPath, "POST", "/hostgroup/sbox/nodes?wait=agent&timeout=120s", { body: JSON.stringify({ secrets: [grant] }) });
      expect(r.status, r.text).to.equal(201);
      set((r.json() as { hostname: string }).hostname);
    }
  });

  after(async function () {
    await d?.destroy();
    const left = (await run("runc", ["list", "-q"])).stdout.split("\n").filter((id) => d && id.startsWith(`pdk-${d.tenantId}-`));
    expect(left, "runc containers left").to.deep.equal([]);
  });

  it("a secret created while the VM runs appears with its content, mode, uid and gid", async () => {
    expect(await sh(granted, SHOW_LIVE)).to.equal("absent\n");
    const r = await secrets("POST", "/secrets", { name: "live", data: Buffer.from("v1-secret").toString("base64"), permissions: "0640", uid: 1000, gid: 1000 });
    expect(r.status, r.text).to.equal(201);
    await until(granted, "640 1000 1000\nv1-secret");
  });

  it("a VM not granted the secret never gets it (the granted one has it)", async () => {
    expect(await sh(granted, SHOW_LIVE)).to.equal("640 1000 1000\nv1-secret");
    expect(await sh(other, "ls -A /run/slicer/secrets 2>/dev/null; echo end")).to.equal("end\n");
  });

  it("PATCH changes content, mode and owner in the running VM", async () => {
    const r = await secrets("PATCH", "/secrets/live", { data: Buffer.from("v2").toString("base64"), permissions: "0600", uid: 1001, gid: 1002 });
    expect(r.status, r.text).to.equal(200);
    await until(granted, "600 1001 1002\nv2");
  });

  it("a change made while the VM is paused arrives when it is resumed", async () => {
    expect((await call(d.socketPath, "POST", `/vm/${granted}/pause`)).status).to.equal(200);
    try {
      const r = await secrets("PATCH", "/secrets/live", { data: Buffer.from("v3").toString("base64") });
      expect(r.status, r.text).to.equal(200);
    } finally {
      expect((await call(d.socketPath, "POST", `/vm/${granted}/resume`)).status).to.equal(200);
    }
    await until(granted, "600 1001 1002\nv3");
  });

  it("`slicer-agent secrets sync` in the guest restores the last pushed set (guest root only)", async () => {
    const out = await sh(granted, "echo tampered > /run/slicer/secrets/live; chmod 0666 /run/slicer/secrets/live; touch /run/slicer/secrets/stray; /.paddock/app/slicer-agent secrets sync; echo rc=$?; ls -A /run/slicer/secrets");
    expect(out).to.equal("synced 1 secret: live\nrc=0\nlive\n");
    expect(await sh(granted, SHOW_LIVE)).to.equal("600 1001 1002\nv3");
    const r = await call(d.socketPath, "POST", `/vm/${granted}/exec?cmd=/bin/sh&args=-c&args=${encodeURIComponent("/.paddock/app/slicer-agent secrets sync; echo rc=$?")}&uid=1000&buffered=true`);
    expect(String((r.json() as { stdout: unknown }).stdout)).to.equal("rc=1\n");
    expect(await sh(other, "/.paddock/app/slicer-agent secrets sync; ls -A /run/slicer/secrets; echo end")).to.equal("synced 0 secrets\nend\n");
  });

  it("DELETE removes the file from the running VM", async () => {
    expect((await secrets("DELETE", "/secrets/live")).status).to.equal(200);
    await until(granted, "absent\n");
    expect(await sh(other, "ls -A /run/slicer/secrets 2>/dev/null; echo end")).to.equal("end\n");
  });
});
