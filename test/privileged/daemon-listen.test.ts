/**
 * The daemon's listener — Unix socket mode 0660, a stale socket file replaced, a
 * socket answered by a live daemon refused; TCP with bearer auth and a 0600 token file.
 * No VMs are needed (count: 0).
 */
import { expect } from "chai";
import { promises as fs } from "node:fs";
import net from "node:net";
import path from "node:path";
import { stringify } from "yaml";
import { run } from "../../shared/exec.js";
import { freePort, request } from "../helpers/http.js";
import { spawn } from "node:child_process";
import { DAEMON_MAIN, TestDaemon, randomIsolatedRange, randomTenantId } from "../helpers/daemon.js";
import { acquireTenantIdLock } from "../../shared/tenant-id-lock.js";
import { claimUidRange, listUidClaims, releaseUidRange } from "../../shared/uid-ranges.js";

describe("tenant daemon listener (privileged)", function () {
  const daemons: TestDaemon[] = [];
  afterEach(async () => {
    for (const d of daemons.splice(0)) await d.destroy();
  });

  it("replaces a stale Unix socket (its binder SIGKILLed), serves with mode 0660, and a second daemon on the same socket is refused", async () => {
    // Two distinct ranges, so the second daemon fails on the socket and not on a range overlap.
    const rangeA = randomIsolatedRange();
    let rangeB = randomIsolatedRange();
    while (rangeB === rangeA) rangeB = randomIsolatedRange();
    const group = (range: string) => [{ name: "sbox", count: 0, ram_mb: 256, storage_size: "128M", network: { mode: "isolated", range } }];
    const d = await TestDaemon.create({ hostGroups: group(rangeA) });
    daemons.push(d);
    // A stale socket: bound by a process that was then SIGKILLed, so nothing unlinked it (a
    // server closed in-process would remove the file). It is a socket, and connecting is refused.
    const binder = spawn(process.execPath, ["-e", `require("net").createServer().listen(${JSON.stringify(d.socketPath)}, () => process.kill(process.pid, "SIGKILL"))`], { stdio: "ignore" });
    await new Promise((resolve) => binder.once("exit", resolve));
    expect((await fs.stat(d.socketPath)).isSocket(), "a socket file was left behind").to.equal(true);
    const refused = await new Promise<string | undefined>((resolve) => {
      const c = net.connect(d.socketPath, () => {
        c.destroy();
        resolve(undefined);
      });
      c.on("error", (e: NodeJS.ErrnoException) => resolve(e.code));
    });
    expect(refused, "connecting to the stale socket").to.equal("ECONNREFUSED");
    await d.start();
    expect((await fs.stat(d.socketPath)).mode & 0o777).to.equal(0o660);
    const other = await TestDaemon.create({ hostGroups: group(rangeB) });
    daemons.push(other);
    await fs.writeFile(other.configPath, (await fs.readFile(other.configPath, "utf8")).replace(other.socketPath, d.socketPath));
    let err: Error | undefined;
    try {
      await other.start(20_000);
    } catch (e) {
      err = e as Error;
    }
    expect(err?.message).to.match(/ERR_SOCKET_IN_USE/);
    expect((await d.get("/healthz")).status, "the first daemon still serves").to.equal(200);
    // Refused before it touched anything: no nftables table, netns or link of its own.
    expect((await run("nft", ["list", "table", "inet", `paddock-${other.tenantId}`], { allowFailure: true })).exitCode, "nft table of the refused daemon").to.not.equal(0);
    expect((await run("ip", ["netns", "list"])).stdout, "netns of the refused daemon").to.not.include(other.tenantId);
    expect((await run("ip", ["-o", "link", "show"])).stdout, "links of the refused daemon").to.not.include(other.tenantId);
  });

  it("on TCP requires the bearer token (401 otherwise, /healthz open) and keeps it in a 0600 file", async () => {
    const d = await TestDaemon.create();
    daemons.push(d);
    const port = await freePort();
    await fs.writeFile(d.configPath, stringify({
      config: { host_groups: [{ name: "sbox", count: 0, ram_mb: 256, storage_size: "128M", network: { mode: "isolated", range: randomIsolatedRange() } }], image: "debian-12", hypervisor: "oci", api: { bind_address: "127.0.0.1", port } },
      paddock: { tenant_id: d.tenantId, state_dir: d.stateDir, run_dir: d.runDir },
    }));
    const target = { host: "127.0.0.1", port };
    // On TCP, readiness is polled on the port.
    await d.start(30_000, { target });
    const tokenFile = path.join(d.stateDir, "auth", "token");
    expect((await fs.stat(tokenFile)).mode & 0o777).to.equal(0o600);
    const token = (await fs.readFile(tokenFile, "utf8")).trim();
    expect(token.length).to.be.greaterThan(30);
    const anon = await request(target, "GET", "/nodes");
    expect(anon.status).to.equal(401);
    expect(anon.json).to.include({ code: "ERR_AUTH_REQUIRED" });
    expect((await request(target, "GET", "/nodes", undefined, { authorization: "Bearer wrong" })).status).to.equal(401);
    const ok = await request(target, "GET", "/nodes", undefined, { authorization: `Bearer ${token}` });
    expect(ok.status).to.equal(200);
    expect(ok.json).to.deep.equal([]);
  });

  it("purge works even when the tenant's image is gone from the store (regression: purge needed the image)", async () => {
    const d = await TestDaemon.create({ paddock: { image_dir: "/nonexistent-image-store" } });
    daemons.push(d);
    const p = spawn(process.execPath, [DAEMON_MAIN, "purge", d.configPath], { stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    p.stderr?.on("data", (c: Buffer) => (stderr += c.toString()));
    const code = await new Promise<number | null>((resolve) => p.once("exit", resolve));
    expect(code, stderr).to.equal(0);
  });

  it("a first start that fails (image missing) leaves no state dir and no uid range claim; a control start of the same config claims one", async () => {
    const d = await TestDaemon.create({ paddock: { image_dir: "/nonexistent-image-store" } });
    daemons.push(d);
    const claims = async () => (await listUidClaims()).filter((c) => "tenantId" in c && c.tenantId === d.tenantId);
    const failed = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
      const p = d.spawn();
      let stderr = "";
      p.stderr?.on("data", (c: Buffer) => (stderr += c.toString()));
      p.once("exit", (code) => resolve({ code, stderr }));
    });
    expect(failed.code, failed.stderr).to.not.equal(0);
    expect(failed.stderr).to.include("ERR_IMAGE_NOT_FOUND");
    expect(await claims()).to.deep.equal([]);
    expect(await fs.stat(d.stateDir).then(() => true, () => false), "state dir").to.equal(false);
    expect(await fs.stat(d.runDir).then(() => true, () => false), "run dir").to.equal(false);
    // Control: the claim and the dir this check looks for are made by a start (claimUidRange).
    await claimUidRange({ tenantId: d.tenantId, stateDir: d.stateDir });
    expect((await claims()).length).to.equal(1);
    await releaseUidRange({ tenantId: d.tenantId, stateDir: d.stateDir });
  });

  it("purge removes the tenant's state and run dirs, and refuses (touching nothing) a run dir named after a tenant id a live process holds", async () => {
    const root = await fs.mkdtemp("/tmp/pdk-purge-");
    const env = { PADDOCK_STATE_DIR: path.join(root, "state"), PADDOCK_RUN_DIR: path.join(root, "run") };
    const purge = (config: string) => run(process.execPath, [DAEMON_MAIN, "purge", config], { allowFailure: true, timeoutMs: 60_000, env });
    const writeConfig = async (file: string, tenantId: string, paddock: Record<string, unknown> = {}): Promise<void> => fs.writeFile(file, stringify({
      config: { host_groups: [{ name: "sbox", count: 0, ram_mb: 256, storage_size: "128M", network: { mode: "isolated", range: randomIsolatedRange() } }], image: "debian-12", hypervisor: "oci", api: { bind_address: path.join(root, `${tenantId}.sock`) } },
      paddock: { tenant_id: tenantId, ...paddock },
    }));
    const exists = (p: string): Promise<boolean> => fs.lstat(p).then(() => true, () => false);
    const held = randomTenantId();
    const releaseHeld = await acquireTenantIdLock({ tenantId: held, configPath: path.join(root, "holder.yaml"), purpose: "serve" });
    try {
      // The default layout a standalone `paddock daemon up` uses: <state>/tenants/<id>, <run>/tenants/<id>.
      const id = randomTenantId();
      const stateDir = path.join(root, "state", "tenants", id);
      const runDir = path.join(root, "run", "tenants", id);
      await fs.mkdir(path.join(stateDir, "disks"), { recursive: true });
      await fs.writeFile(path.join(stateDir, "disks", "sbox-1.img"), "");
      await fs.mkdir(path.join(runDir, "sbox-1"), { recursive: true });
      await writeConfig(path.join(root, "a.yaml"), id);
      const ok = await purge(path.join(root, "a.yaml"));
      expect(ok.exitCode, ok.stderr).to.equal(0);
      expect(await exists(stateDir), "state dir").to.equal(false);
      expect(await exists(runDir), "run dir").to.equal(false);
      expect(await exists(path.join(root, "state", "tenants")), "the shared tenants dir stays").to.equal(true);
      // A run dir named after a tenant id this test process holds: refused before anything is touched.
      const heldRunDir = path.join(root, "run", "tenants", held);
      await fs.mkdir(heldRunDir, { recursive: true });
      await fs.writeFile(path.join(heldRunDir, "api.sock"), "");
      await writeConfig(path.join(root, "b.yaml"), randomTenantId(), { run_dir: heldRunDir });
      const refused = await purge(path.join(root, "b.yaml"));
      expect(refused.exitCode, refused.stderr).to.equal(4); // a conflict (tenant-daemon/main.ts daemonExitCode)
      expect(refused.stderr).to.contain("ERR_TENANT_ID_IN_USE").and.contain(`pid ${process.pid}`);
      expect(await exists(path.join(heldRunDir, "api.sock")), "the holder's run dir").to.equal(true);
    } finally {
      await releaseHeld();
      await fs.rm(root, { recursive: true, force: true });
    }
  });
});
