/**
 * `paddock tenant …` (cli/tenant-commands.ts, cli/target.ts) against a fake admin API on
 * loopback: what the CLI prints for the API's answers, and which admin token it sends (or
 * refuses to send).
 */
import { expect } from "chai";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { runCli } from "../../cli/paddock.js";
import { TENANT_HELP, renderTenantDetails, renderTenantTable } from "../../cli/tenant-commands.js";
import { resolveAdminTarget } from "../../cli/target.js";
import { fakeCliContext } from "../helpers/cli-context.js";

/** A fake admin API: answers every request with `answer(method, url)` and records the requests. */
async function fakeAdmin(answer: (method: string, url: string) => { status: number; body: unknown }): Promise<{ url: string; requests: { method: string; url: string; auth: string | undefined; body: string }[]; close: () => Promise<void> }> {
  const requests: { method: string; url: string; auth: string | undefined; body: string }[] = [];
  const server = http.createServer((req, res) => {
    const r = { method: req.method ?? "", url: req.url ?? "", auth: req.headers.authorization, body: "" };
    requests.push(r);
    req.setEncoding("utf8");
    req.on("data", (d: string) => { r.body += d; });
    req.on("end", () => {
      const a = answer(req.method ?? "", req.url ?? "");
      res.writeHead(a.status, { "content-type": "application/json" });
      res.end(JSON.stringify(a.body));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests,
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}

const context = (env: NodeJS.ProcessEnv, files: Record<string, string> = {}) => fakeCliContext(env, (f) => files[f]);

const tenant = (status: string, extra: Record<string, unknown> = {}) => ({ id: "t1", status, template: "default", created_at: "2026-01-01T00:00:00Z", ...extra });

describe("paddock tenant resume (cli/tenant-commands.ts)", () => {
  it("of an active tenant says it was already active and nothing was resumed (exit 0); of a suspended one lists the VMs resumed", async () => {
    const api = await fakeAdmin((_m, url) => url.endsWith("/t1/resume")
      ? { status: 200, body: { ...tenant("active"), resumed_vms: [], errors: [], already_active: true } }
      : { status: 200, body: { ...tenant("active"), resumed_vms: ["sbox-1"], errors: [], already_active: false } });
    try {
      const active = context({ PADDOCK_ADMIN_URL: api.url, PADDOCK_ADMIN_TOKEN: "adm" });
      expect(await runCli(["tenant", "resume", "t1"], active.ctx), active.err.text()).to.equal(0);
      expect(active.out.text()).to.equal("tenant t1 is already active; nothing resumed\n");
      const suspended = context({ PADDOCK_ADMIN_URL: api.url, PADDOCK_ADMIN_TOKEN: "adm" });
      expect(await runCli(["tenant", "resume", "t2"], suspended.ctx), suspended.err.text()).to.equal(0);
      expect(suspended.out.text()).to.equal("tenant t2 resumed (resumed VMs: sbox-1)\n");
      expect(api.requests.map((r) => `${r.method} ${r.url}`)).to.deep.equal(["POST /admin/v1/tenants/t1/resume", "POST /admin/v1/tenants/t2/resume"]);
    } finally {
      await api.close();
    }
  });
});

describe("paddock tenant restart (cli/tenant-commands.ts)", () => {
  it("says what a restart cost: the tenant's ephemeral and warm VMs", async () => {
    const api = await fakeAdmin(() => ({ status: 200, body: tenant("active") }));
    try {
      const c = context({ PADDOCK_ADMIN_URL: api.url, PADDOCK_ADMIN_TOKEN: "adm" });
      expect(await runCli(["tenant", "restart", "t1"], c.ctx), c.err.text()).to.equal(0);
      expect(c.out.text()).to.equal("tenant t1 restarted (its ephemeral and warm VMs were deleted; persistent and count: VMs kept running)\n");
      expect(api.requests.map((r) => `${r.method} ${r.url}`)).to.deep.equal(["POST /admin/v1/tenants/t1/restart"]);
    } finally {
      await api.close();
    }
  });
});

describe("paddock tenant create: a daemon that fails at start (cli/tenant-commands.ts daemonStartFailure)", () => {
  it("prints one line: the supervisor's message with the daemon's reason, its code in words, what became of the tenant, and one code (exit 1)", async () => {
    const reason = "image \"debian-13\" is not in the image store /var/lib/paddock/images; build it with `paddock image build debian-13`";
    // The body supervisor/admin-api.ts sends for spawnDaemon's error (supervisor/daemon-process.ts).
    const api = await fakeAdmin(() => ({ status: 500, body: {
      error: `daemon of tenant t1 exited (exit 1) before it was ready: ${reason} (ERR_IMAGE_NOT_FOUND)`, code: "ERR_DAEMON_START_FAILED",
      stderr: ["{\"level\":\"error\"}"], tenant: "t1", daemon_code: "ERR_IMAGE_NOT_FOUND",
    } }));
    try {
      const c = context({ PADDOCK_ADMIN_URL: api.url, PADDOCK_ADMIN_TOKEN: "adm" });
      expect(await runCli(["tenant", "create", "--id", "t1"], c.ctx)).to.equal(1);
      const lines = c.err.text().split("\n").filter((l) => l !== "" && !l.includes("provisioning tenant"));
      expect(lines).to.deep.equal([`paddock: error: daemon of tenant t1 exited (exit 1) before it was ready: ${reason} [the daemon's error: ERR_IMAGE_NOT_FOUND]; tenant t1 is kept as failed: its log is \`paddock tenant logs t1\`; once the cause is fixed, \`paddock tenant restart t1\` starts it again with its tokens and persistent VMs (a cause in the config it was created with needs \`paddock tenant delete t1\` and a new create) (ERR_DAEMON_START_FAILED)`]);
      expect(c.out.text()).to.equal("");
    } finally {
      await api.close();
    }
  });
});

describe("paddock tenant create ID (cli/tenant-commands.ts)", () => {
  it("takes the id as an argument like every other tenant command, or as --id; two different ids are a usage error", async () => {
    const api = await fakeAdmin((_m, _url) => ({ status: 201, body: { ...tenant("active"), token: "pdk_x", token_id: "tok_1" } }));
    const server = api;
    try {
      for (const argv of [["tenant", "create", "t1"], ["tenant", "create", "--id", "t1"], ["tenant", "create", "t1", "--id", "t1"]]) {
        const c = context({ PADDOCK_ADMIN_URL: server.url, PADDOCK_ADMIN_TOKEN: "adm" });
        expect(await runCli(argv, c.ctx), c.err.text()).to.equal(0);
      }
      expect(server.requests.map((r) => `${r.method} ${r.url} ${r.body}`)).to.deep.equal(Array(3).fill('POST /admin/v1/tenants {"id":"t1"}'));
      const two = context({ PADDOCK_ADMIN_URL: server.url, PADDOCK_ADMIN_TOKEN: "adm" });
      expect(await runCli(["tenant", "create", "t1", "--id", "t2"], two.ctx)).to.equal(2);
      expect(two.err.text()).to.equal("paddock: usage error: two ids: \"t1\" and --id \"t2\"; give one\n");
      const extra = context({ PADDOCK_ADMIN_URL: server.url, PADDOCK_ADMIN_TOKEN: "adm" });
      expect(await runCli(["tenant", "create", "t1", "t2"], extra.ctx)).to.equal(2);
      expect(server.requests).to.have.length(3);
    } finally {
      await api.close();
    }
  });
});

describe("paddock tenant token --json (cli/tenant-commands.ts tokenJson)", () => {
  it("prints the token id as token_id (the name tenant create --json uses) beside the API's id", async () => {
    const issued = { id: "tok_3f2a9b1c0d4e", token: "pdk_x", created_at: "2026-01-01T00:00:00Z", expires_at: "2026-01-02T00:00:00Z" };
    const api = await fakeAdmin(() => ({ status: 201, body: issued }));
    try {
      const c = context({ PADDOCK_ADMIN_URL: api.url, PADDOCK_ADMIN_TOKEN: "adm" });
      expect(await runCli(["tenant", "token", "t1", "--json"], c.ctx), c.err.text()).to.equal(0);
      const out = JSON.parse(c.out.text()) as Record<string, unknown>;
      expect(out).to.deep.equal({ ...issued, token_id: issued.id });
      expect(Object.keys(out).slice(0, 2)).to.deep.equal(["id", "token_id"]);
      expect(api.requests.map((r) => `${r.method} ${r.url}`)).to.deep.equal(["POST /admin/v1/tenants/t1/tokens"]);
    } finally {
      await api.close();
    }
  });
});

describe("paddock tenant token revoke (cli/tenant-commands.ts)", () => {
  it("says a token was revoked, or that it already was (since when), exit 0 both; --json has already_revoked", async () => {
    const at = "2026-01-01T00:00:00.000Z";
    const api = await fakeAdmin((_m, url) => url.endsWith("/tok_old") ? { status: 200, body: { id: "tok_old", revoked_at: at, already_revoked: true } } : { status: 204, body: "" });
    try {
      // The help says which id is which (id here is the tenant's; tenant token --json's id is the token's).
      expect(TENANT_HELP.replace(/\s+/g, " ")).to.include("token revoke prints id (the TENANT's id").and.include("Scripts: read tenant_id and token_id");
      const fresh = context({ PADDOCK_ADMIN_URL: api.url, PADDOCK_ADMIN_TOKEN: "adm" });
      expect(await runCli(["tenant", "token", "revoke", "t1", "tok_new"], fresh.ctx), fresh.err.text()).to.equal(0);
      expect(fresh.out.text()).to.equal("token tok_new of tenant t1 revoked\n");
      const old = context({ PADDOCK_ADMIN_URL: api.url, PADDOCK_ADMIN_TOKEN: "adm" });
      expect(await runCli(["tenant", "token", "revoke", "t1", "tok_old"], old.ctx), old.err.text()).to.equal(0);
      expect(old.out.text()).to.equal(`token tok_old of tenant t1 is already revoked (at ${at}); nothing done\n`);
      const json = context({ PADDOCK_ADMIN_URL: api.url, PADDOCK_ADMIN_TOKEN: "adm" });
      expect(await runCli(["tenant", "token", "revoke", "t1", "tok_old", "--json"], json.ctx), json.err.text()).to.equal(0);
      expect(JSON.parse(json.out.text())).to.deep.equal({ id: "t1", tenant_id: "t1", token_id: "tok_old", revoked: true, already_revoked: true, revoked_at: at });
      const jsonFresh = context({ PADDOCK_ADMIN_URL: api.url, PADDOCK_ADMIN_TOKEN: "adm" });
      expect(await runCli(["tenant", "token", "revoke", "t1", "tok_new", "--json"], jsonFresh.ctx), jsonFresh.err.text()).to.equal(0);
      expect(JSON.parse(jsonFresh.out.text())).to.deep.equal({ id: "t1", tenant_id: "t1", token_id: "tok_new", revoked: true, already_revoked: false });
      expect(api.requests.map((r) => `${r.method} ${r.url}`)).to.deep.equal(["tok_new", "tok_old", "tok_old", "tok_new"].map((k) => `DELETE /admin/v1/tenants/t1/tokens/${k}`));
    } finally {
      await api.close();
    }
  });
});

describe("paddock tenant: an empty admin token (cli/target.ts)", () => {
  it("--admin-token '' and PADDOCK_ADMIN_TOKEN= for an http(s) admin API are refused before sending (ERR_AUTH_REQUIRED, exit 1), not replaced by the admin-token file", async () => {
    const api = await fakeAdmin(() => ({ status: 200, body: [] }));
    const files = { "/st/supervisor/admin-token": "filetok\n" };
    try {
      for (const [argv, env, name] of [
        [["tenant", "list", "--admin-token", ""], { PADDOCK_ADMIN_URL: api.url, PADDOCK_STATE_DIR: "/st" }, "--admin-token"],
        [["tenant", "list"], { PADDOCK_ADMIN_URL: api.url, PADDOCK_STATE_DIR: "/st", PADDOCK_ADMIN_TOKEN: "" }, "PADDOCK_ADMIN_TOKEN"],
        [["--admin-token=", "tenant", "list"], { PADDOCK_ADMIN_URL: api.url, PADDOCK_STATE_DIR: "/st" }, "--admin-token"],
      ] as const) {
        const { ctx, out, err } = context({ ...env }, files);
        expect(await runCli([...argv], ctx), argv.join(" ")).to.equal(1);
        expect(out.text()).to.equal("");
        expect(err.text(), argv.join(" ")).to.match(new RegExp(`^paddock: error: the API token is empty: ${name} is set but empty; .*\\(ERR_AUTH_REQUIRED\\)\\n$`));
      }
      expect(api.requests, "nothing was sent").to.deep.equal([]);
      // Unset, the admin-token file is used.
      const { ctx } = context({ PADDOCK_ADMIN_URL: api.url, PADDOCK_STATE_DIR: "/st" }, files);
      expect(await runCli(["tenant", "list"], ctx)).to.equal(0);
      expect(api.requests.map((r) => r.auth)).to.deep.equal(["Bearer filetok"]);
      // On a Unix socket an empty variable counts as unset, as on the tenant side: the file is read.
      expect(resolveAdminTarget({}, { PADDOCK_ADMIN_URL: "/run/adm.sock", PADDOCK_ADMIN_TOKEN: "", PADDOCK_STATE_DIR: "/st" }, (f) => files[f as keyof typeof files]).token).to.equal("filetok");
    } finally {
      await api.close();
    }
  });
});

describe("paddock tenant list / get rendering (cli/tenant-commands.ts)", () => {
  it("list shows each tenant's runtime; get says when changed limits wait for a restart", () => {
    const table = renderTenantTable([tenant("active", { hypervisor: "gvisor" }), { ...tenant("active", { hypervisor: "oci" }), id: "t2" }], Date.parse("2026-01-02T00:00:00Z"));
    const [head, first, second] = table.split("\n");
    expect(head).to.match(/^ID\s+STATUS\s+TEMPLATE\s+RUNTIME\s+DAEMON/);
    expect(first).to.match(/^t1\s+active\s+default\s+gvisor\b/);
    expect(second).to.match(/^t2\s+active\s+default\s+oci\b/);
    const pending = renderTenantDetails(tenant("active", { limits: { max_vms: 3 }, pending_restart: true }));
    expect(pending).to.match(/^limits:\s+max_vms=3 \(pending restart: applied at the daemon's next start, paddock tenant restart\)$/m);
    expect(renderTenantDetails(tenant("active", { limits: { max_vms: 3 }, pending_restart: false }))).to.match(/^limits:\s+max_vms=3$/m);
    expect(renderTenantDetails(tenant("active", { vms: { total: 0, by_status: {} } }))).to.match(/^vms:\s+0$/m);
    expect(renderTenantDetails(tenant("active", { vms: { total: 2, by_status: { Running: 2 } } }))).to.match(/^vms:\s+2 \(Running 2\)$/m);
  });

  it("list and get show the daemon's build and get its start (docs/admin-api.openapi.yaml daemon.version, started_at)", () => {
    const daemon = { state: "running", pid: 42, restarts: 0, uptime_seconds: 240, started_at: "2026-01-01T23:56:00.000Z", version: "0.1.0+0123456789ab" };
    const [head, row] = renderTenantTable([tenant("active", { daemon })], Date.parse("2026-01-02T00:00:00Z")).split("\n");
    expect(head).to.match(/\bRESTARTS\s+VERSION\s+RANGES\b/);
    expect(row).to.match(/\b42\s+0\s+0\.1\.0\+0123456789ab\s/);
    const text = renderTenantDetails(tenant("active", { daemon }));
    expect(text).to.match(/^daemon:\s+running, pid 42, 0 restarts, up 240s \(since 2026-01-01T23:56:00\.000Z\)$/m);
    expect(text).to.match(/^daemon version:\s+0\.1\.0\+0123456789ab$/m);
    expect(renderTenantDetails(tenant("active", { daemon: { state: "stopped", restarts: 0 } }))).to.not.match(/daemon version/);
  });

  it("get marks an expired token expired, a live one with its expiry, and leaves revoked ones out", () => {
    const tokens = [
      { id: "tk_old", expires_at: "2026-01-01T00:00:00Z" },
      { id: "tk_live", expires_at: "2026-01-03T00:00:00Z" },
      { id: "tk_forever" },
      { id: "tk_gone", revoked_at: "2026-01-01T12:00:00Z" },
    ];
    const text = renderTenantDetails(tenant("active", { tokens }), Date.parse("2026-01-02T00:00:00Z"));
    expect(text).to.match(/^tokens:\s+tk_old \(expired 2026-01-01T00:00:00Z\), tk_live \(expires 2026-01-03T00:00:00Z\), tk_forever$/m);
  });
});

describe("paddock tenant update (cli/tenant-commands.ts)", () => {
  it("PATCHes the limits given and says how to apply them; no limit flag is a usage error sending nothing", async () => {
    const api = await fakeAdmin(() => ({ status: 200, body: { ...tenant("active"), pending_restart: true } }));
    try {
      const c = context({ PADDOCK_ADMIN_URL: api.url, PADDOCK_ADMIN_TOKEN: "adm" });
      expect(await runCli(["tenant", "update", "t1", "--max-pids", "60", "--max-ram", "2G"], c.ctx), c.err.text()).to.equal(0);
      expect(api.requests.map((r) => `${r.method} ${r.url}`)).to.deep.equal(["PATCH /admin/v1/tenants/t1"]);
      expect(JSON.parse(api.requests[0]?.body ?? "")).to.deep.equal({ limits: { max_ram_bytes: 2 * 2 ** 30, max_pids: 60 } });
      expect(c.out.text()).to.equal("tenant t1 limits set (max_ram_bytes 2147483648, max_pids 60); they apply at its daemon's next start: paddock tenant restart t1\n");
      const none = context({ PADDOCK_ADMIN_URL: api.url, PADDOCK_ADMIN_TOKEN: "adm" });
      expect(await runCli(["tenant", "update", "t1"], none.ctx)).to.equal(2);
      expect(none.err.text()).to.contain("give at least one of --max-vms");
      expect(api.requests).to.have.length(1);
    } finally {
      await api.close();
    }
  });

  it("is listed in paddock tenant --help and paddock --help", async () => {
    expect(TENANT_HELP).to.match(/^ {2}update ID \[--max-vms N\].*\[--max-pids N\]/m);
    const c = context({});
    expect(await runCli(["--help"], c.ctx)).to.equal(0);
    expect(c.out.text()).to.contain("tenant create|list|get|update|");
  });
});
