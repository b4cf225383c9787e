/**
 * The compiled `paddock` CLI against a REAL supervisor started with `paddock up` (gateway and
 * admin API on Unix sockets in a short temp dir, real tenant daemons with runc sandboxes, a
 * network pool from 198.18.0.0/15): tenant create/list/get/token/revoke/suspend/resume/delete
 * through the admin API, and vm launch/exec/cp/delete through the gateway with the tenant's
 * token. Needs root, runc and the debian-12 base image; skipped otherwise.
 */
import { expect } from "chai";
import { spawn } from "node:child_process";
import { randomBytes, randomInt } from "node:crypto";
import { existsSync, promises as fs } from "node:fs";
import path from "node:path";
import { run } from "../../shared/exec.js";
import { PROJECT_ROOT, loopDevicesUnder, mountsUnder } from "../helpers/daemon.js";
import { TestSupervisor } from "../helpers/supervisor.js";

const CLI = path.join(PROJECT_ROOT, "dist/cli/paddock.js");
const IMAGE_DIR = process.env.PADDOCK_IMAGE_DIR ?? path.join(process.env.PADDOCK_STATE_DIR ?? "/var/lib/paddock", "images");

interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

function cli(args: string[], env: NodeJS.ProcessEnv, input = ""): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { env, stdio: ["pipe", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (c: Buffer) => (out += c.toString()));
    child.stderr.on("data", (c: Buffer) => (err += c.toString()));
    child.once("error", reject);
    child.once("close", (code) => resolve({ code, stdout: out, stderr: err }));
    child.stdin.end(input);
  });
}

describe("paddock CLI against a real supervisor (root, runc)", function () {
  let dir = "";
  let gatewaySock = "";
  let sup: TestSupervisor | undefined;
  /** Admin CLI environment: admin socket, token read from <state>/supervisor/admin-token. */
  let adminEnv: NodeJS.ProcessEnv;
  const tenantId = "c" + randomBytes(4).toString("hex").slice(0, 7);
  let token = "";
  let host = "";

  const gwEnv = (tok: string): NodeJS.ProcessEnv => ({ ...process.env, PADDOCK_URL: gatewaySock, PADDOCK_TOKEN: tok, SLICER_URL: "", SLICER_TOKEN: "" });

  before(async function () {
    if (process.getuid?.() !== 0 || !existsSync(path.join(IMAGE_DIR, "debian-12", "image.json")) || (await run("runc", ["--version"], { allowFailure: true }).catch(() => undefined))?.exitCode !== 0) {
      this.skip(); // needs root, runc and the base image (scripts/setup.sh)
    }
    // A random /20 of 198.18.0.0/15 (test addresses only), cut into /22 tenant blocks.
    const n = randomInt(0, 32) * 16;
    const pool = `198.${18 + (n >> 8)}.${n & 255}.0/20`;
    sup = await TestSupervisor.create({
      mode: "child",
      config: (p) => ({
        gateway: { address: path.join(p.dir, "gw.sock") },
        admin: { address: path.join(p.dir, "adm.sock") },
        image_dir: IMAGE_DIR,
        network: { pool, block_prefix: 22 },
        templates: { dir: path.join(PROJECT_ROOT, "templates") },
        stop_daemons_on_exit: true,
      }),
    });
    dir = sup.dir;
    gatewaySock = path.join(dir, "gw.sock");
    adminEnv = { ...process.env, PADDOCK_ADMIN_URL: path.join(dir, "adm.sock"), PADDOCK_ADMIN_TOKEN: "", PADDOCK_STATE_DIR: sup.stateDir };
    await sup.start();
  });

  after(async function () {
    if (!sup) return;
    try {
      // Delete the tenant (idempotent), then SIGTERM the supervisor by pid (it stops its daemons).
      await cli(["tenant", "delete", tenantId], adminEnv).catch(() => undefined);
      await sup.stop();
      const left = (await run("runc", ["list", "-q"])).stdout.split("\n").filter((id) => id.startsWith(`pdk-${tenantId}-`));
      expect(left, "runc containers left").to.deep.equal([]);
      expect(await mountsUnder(dir), "mounts left").to.deep.equal([]);
      expect(await loopDevicesUnder(dir), "loop devices left").to.deep.equal([]);
    } finally {
      await sup.destroy();
    }
  });

  it("creates a tenant (admin token read from the state dir) and shows its one-time token", async () => {
    const r = await cli(["tenant", "create", "--id", tenantId, "--label", "team=cli", "--max-vms", "3", "--max-pids", "300", "--json"], adminEnv);
    expect(r.code, r.stderr + (sup?.output ?? "").slice(-3000)).to.equal(0);
    const t = JSON.parse(r.stdout) as { id: string; status: string; token: string; token_id: string; ranges: { cidr: string }[]; limits: Record<string, number> };
    expect(t).to.include({ id: tenantId, status: "active" });
    expect(t.token).to.match(/^pdk_/);
    // The given limit, and the template's defaults for the others.
    expect(t.limits).to.include({ max_vms: 3, max_pids: 300 });
    expect(Object.keys(t.limits).sort()).to.deep.equal(["max_conns", "max_conns_per_vm", "max_disk_bytes", "max_pids", "max_ram_bytes", "max_vcpu", "max_vms"]);
    expect(t.ranges[0]?.cidr).to.match(/^198\.1[89]\./);
    token = t.token;
  });

  it("lists and gets tenants (table, --json, --label filter); an unknown tenant exits 3", async () => {
    const table = await cli(["tenant", "list"], adminEnv);
    expect(table.stdout).to.match(new RegExp(`^${tenantId}\\s+active\\s+sandbox\\s+oci\\s+running`, "m"));
    const filtered = JSON.parse((await cli(["tenant", "list", "--label", "team=cli", "--json"], adminEnv)).stdout) as { id: string }[];
    expect(filtered.map((t) => t.id)).to.deep.equal([tenantId]);
    const none = JSON.parse((await cli(["tenant", "list", "--label", "team=nobody", "--json"], adminEnv)).stdout) as unknown[];
    expect(none).to.deep.equal([]);
    const get = await cli(["tenant", "get", tenantId], adminEnv);
    expect(get.stdout).to.match(/^status:\s+active$/m).and.match(/^labels:\s+team=cli$/m);
    const missing = await cli(["tenant", "get", "nosuch"], adminEnv);
    expect(missing.code).to.equal(3);
    expect(missing.stderr).to.contain("HTTP 404");
  });

  it("a wrong admin token exits 1 and says where the token lives", async () => {
    const r = await cli(["tenant", "list"], { ...adminEnv, PADDOCK_ADMIN_TOKEN: "wrong" });
    expect(r.code).to.equal(1);
    expect(r.stderr).to.contain("HTTP 401").and.contain("admin-token");
  });

  it("refusals name their stable code: an unknown template lists the templates; a second `paddock up` on the state dir is ERR_STATE_LOCKED", async () => {
    const t = await cli(["tenant", "create", "--template", "nope"], adminEnv);
    expect(t.code, t.stderr).to.equal(1);
    expect(t.stderr).to.contain("ERR_TEMPLATE_NOT_FOUND").and.match(/templates there: (?:[a-z0-9-]+, )*sandbox\b/);
    // The supervisor's own start error (supervisor/main.ts), not the CLI's handler, prints this one.
    const up = await cli(["up", "--config", sup?.configFile as string, "--gateway", "127.0.0.1:0", "--admin", "127.0.0.1:0"], process.env);
    expect(up.code, up.stderr).to.equal(4);
    expect(up.stderr).to.match(/^paddock: error: .*already in use by another running process.* \(ERR_STATE_LOCKED\)$/m);
  });

  it("runs the sandbox flow through the gateway with the tenant token: launch, exec, cp, delete", async () => {
    const env = gwEnv(token);
    const l = await cli(["vm", "launch", "--wait", "agent", "--json"], env);
    expect(l.code, l.stderr + (sup?.output ?? "").slice(-3000)).to.equal(0);
    host = (JSON.parse(l.stdout) as { hostname: string }).hostname;
    expect(host).to.equal("sbox-1");
    const e = await cli(["vm", "exec", host, "--", "sh", "-c", "echo hi; exit 3"], env);
    expect(e.stdout).to.equal("hi\n");
    expect(e.code).to.equal(3);
    const src = path.join(dir, "in.txt");
    await fs.writeFile(src, "through the gateway\n");
    expect((await cli(["vm", "cp", src, `${host}:/tmp/in.txt`], env)).code).to.equal(0);
    const back = await cli(["vm", "cp", `${host}:/tmp/in.txt`, "-"], env);
    expect(back.stdout).to.equal("through the gateway\n");
    const d = await cli(["vm", "delete", host], env);
    expect(d.code, d.stderr).to.equal(0);
    expect(JSON.parse((await cli(["vm", "list", "--json"], env)).stdout)).to.deep.equal([]);
  });

  it("issues and revokes tokens: a revoked token is refused (exit 1, HTTP 401)", async () => {
    const r = await cli(["tenant", "token", tenantId, "--expires-in", "1h", "--json"], adminEnv);
    expect(r.code, r.stderr).to.equal(0);
    const t = JSON.parse(r.stdout) as { id: string; token: string; expires_at: string };
    expect(Date.parse(t.expires_at) - Date.now()).to.be.within(3500_000, 3600_000);
    expect((await cli(["vm", "list"], gwEnv(t.token))).code).to.equal(0);
    expect((await cli(["vm", "list"], gwEnv(token))).code, "older tokens stay valid").to.equal(0);
    const rv = await cli(["tenant", "token", "revoke", tenantId, t.id], adminEnv);
    expect(rv.code, rv.stderr).to.equal(0);
    const refused = await cli(["vm", "list"], gwEnv(t.token));
    expect(refused.code).to.equal(1);
    expect(refused.stderr).to.contain("HTTP 401");
  });

  it("suspend makes the gateway answer 403 (exit 4); resume restores access", async () => {
    const s = await cli(["tenant", "suspend", tenantId, "--reason", "cli test"], adminEnv);
    expect(s.code, s.stderr).to.equal(0);
    expect(s.stdout).to.match(new RegExp(`^tenant ${tenantId} suspended`));
    const blocked = await cli(["vm", "list"], gwEnv(token));
    expect(blocked.code).to.equal(4);
    expect(blocked.stderr).to.contain("ERR_TENANT_SUSPENDED");
    expect((await cli(["tenant", "get", tenantId], adminEnv)).stdout).to.match(/^status:\s+suspended \(cli test\)$/m);
    // A second suspend is a no-op and says so (the API answers already_suspended), keeping the reason.
    const twice = await cli(["tenant", "suspend", tenantId, "--reason", "other"], adminEnv);
    expect(twice.code, twice.stderr).to.equal(0);
    expect(twice.stdout).to.equal(`tenant ${tenantId} is already suspended (cli test); nothing paused\n`);
    expect((await cli(["tenant", "get", tenantId], adminEnv)).stdout).to.match(/^status:\s+suspended \(cli test\)$/m);
    expect((await cli(["tenant", "resume", tenantId], adminEnv)).code).to.equal(0);
    expect((await cli(["vm", "list"], gwEnv(token))).code).to.equal(0);
    // A second resume is a no-op and says so (the API answers already_active).
    const again = await cli(["tenant", "resume", tenantId], adminEnv);
    expect(again.code, again.stderr).to.equal(0);
    expect(again.stdout).to.equal(`tenant ${tenantId} is already active; nothing resumed\n`);
  });

  it("deletes the tenant; afterwards it is not found (exit 3)", async () => {
    const d = await cli(["tenant", "delete", tenantId], adminEnv);
    expect(d.code, d.stderr).to.equal(0);
    expect(d.stdout).to.equal(`tenant ${tenantId} deleted\n`);
    expect((await cli(["tenant", "get", tenantId], adminEnv)).code).to.equal(3);
    // Deleting it again (or a mistyped id) says it did not exist: exit 3, not "deleted".
    const again = await cli(["tenant", "delete", tenantId], adminEnv);
    expect(again.code, again.stderr).to.equal(3);
    expect(again.stdout).to.equal("");
    expect(again.stderr).to.contain(`tenant ${tenantId} does not exist; nothing deleted`);
  });
});
