/**
 * `paddock vm shutdown` and `paddock vm exec` (cli/vm-lifecycle-commands.ts, cli/vm-exec-command.ts)
 * against a fake tenant API on loopback: what the CLI says became of a VM after a shutdown (asked
 * of the API, not guessed), what a pause, resume, suspend or restore that found the VM in that
 * state says, and how an exec stream cut by the gateway ends.
 */
import { expect } from "chai";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { runCli } from "../../cli/paddock.js";
import { fakeCliContext } from "../helpers/cli-context.js";
import { FrameType, encodeFrame } from "../../shared/slicer/shell-frames.js";

type Handler = (req: http.IncomingMessage, res: http.ServerResponse) => void;

/** A fake tenant API on 127.0.0.1 answering with `handler`; records `METHOD url` of each request. */
async function fakeApi(handler: Handler): Promise<{ env: NodeJS.ProcessEnv; requests: string[]; close: () => Promise<void> }> {
  const requests: string[] = [];
  const server = http.createServer((req, res) => {
    requests.push(`${req.method} ${req.url}`);
    req.resume();
    req.on("end", () => handler(req, res));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    env: { PADDOCK_URL: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, PADDOCK_TOKEN: "tok" },
    requests,
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}

const json = (res: http.ServerResponse, status: number, body: unknown): void => {
  res.writeHead(status, { "content-type": "application/json" });
  res.end(JSON.stringify(body));
};

describe("paddock vm shutdown says what became of the VM (cli/vm-lifecycle-commands.ts shutdownOutcome)", () => {
  it("an ephemeral VM (GET /vm/{h} is 404 afterwards) is reported deleted, a persistent one stopped; the wire request is unchanged", async () => {
    const persistent = new Set(["keep-1"]);
    const api = await fakeApi((req, res) => {
      const url = req.url ?? "";
      if (req.method === "POST" && url.includes("/shutdown")) {
        res.writeHead(200, { "content-type": "text/plain" });
        res.end("OK");
        return;
      }
      const h = decodeURIComponent(url.split("/")[2] ?? "");
      if (req.method === "GET" && persistent.has(h)) json(res, 200, { hostname: h, status: "Stopped", persistent: true });
      else json(res, 404, { error: `VM ${h} not found`, code: "ERR_VM_NOT_FOUND" });
    });
    try {
      const eph = fakeCliContext(api.env);
      expect(await runCli(["vm", "shutdown", "sbox-1"], eph.ctx), eph.err.text()).to.equal(0);
      expect(eph.out.text()).to.equal("sbox-1 deleted (ephemeral: removed with its disk)\n");
      const kept = fakeCliContext(api.env);
      expect(await runCli(["vm", "shutdown", "keep-1", "--action", "reboot"], kept.ctx), kept.err.text()).to.equal(0);
      expect(kept.out.text()).to.equal("keep-1 stopped\n");
      expect(api.requests).to.deep.equal(["POST /vm/sbox-1/shutdown", "GET /vm/sbox-1", "POST /vm/keep-1/shutdown?action=reboot", "GET /vm/keep-1"]);
    } finally {
      await api.close();
    }
  });
});

describe("paddock vm pause|resume|suspend of a VM already in that state (cli/vm-lifecycle-commands.ts, cli/vm-commit-commands.ts)", () => {
  it("says the VM already was paused, running or suspended when the answer carries Paddock-Already, else what was done", async () => {
    const already = new Map([["pause", "paused"], ["resume", "running"], ["suspend", "suspended"]]);
    let noop = true;
    const api = await fakeApi((req, res) => {
      const verb = (req.url ?? "").split("/")[3] ?? "";
      const state = already.get(verb);
      res.writeHead(200, { "content-type": "text/plain", ...(noop && state !== undefined ? { "Paddock-Already": state } : {}) });
      res.end("OK");
    });
    try {
      for (const [verb, state] of already) {
        const c = fakeCliContext(api.env);
        expect(await runCli(["vm", verb, "sbox-1"], c.ctx), c.err.text()).to.equal(0);
        expect(c.out.text()).to.equal(`sbox-1 is already ${state}; nothing done\n`);
      }
      noop = false;
      for (const [verb, past] of [["pause", "paused"], ["resume", "resumed"], ["suspend", "suspended"]] as const) {
        const c = fakeCliContext(api.env);
        expect(await runCli(["vm", verb, "sbox-1"], c.ctx), c.err.text()).to.equal(0);
        expect(c.out.text()).to.equal(`sbox-1 ${past}\n`);
      }
    } finally {
      await api.close();
    }
  });
});

describe("paddock vm restore of a running or paused VM (cli/vm-commit-commands.ts vmRestore)", () => {
  it("a running VM (409 ERR_VM_ALREADY_RUNNING, GET says Running) is a no-op, exit 0; a paused one stays an error, exit 4", async () => {
    const paused = "VM pau-1 is paused, not suspended; thaw it with POST /vm/pau-1/resume (CLI: paddock vm resume pau-1)";
    const status = new Map([["run-1", "Running"], ["pau-1", "Paused"], ["sus-1", "Suspended"]]);
    const asked: string[] = [];
    const api = await fakeApi((req, res) => {
      asked.push(`${req.method ?? ""} ${req.url ?? ""}`);
      const [, , h = "", verb] = (req.url ?? "").split("?")[0]?.split("/") ?? [];
      if (req.method === "GET") return json(res, 200, { hostname: h, status: status.get(h) });
      // The daemon's answers (tenant-daemon/vm/vm-suspend.ts restore).
      if (verb === "restore" && h === "run-1") return json(res, 409, { error: "VM run-1 is already running", code: "ERR_VM_ALREADY_RUNNING" });
      if (verb === "restore" && h === "pau-1") return json(res, 409, { error: paused, code: "ERR_VM_ALREADY_RUNNING" });
      res.writeHead(200, { "content-type": "text/plain" });
      res.end("OK");
    });
    try {
      const run = fakeCliContext(api.env);
      expect(await runCli(["vm", "restore", "run-1", "--wait", "agent"], run.ctx), run.err.text()).to.equal(0);
      expect(run.out.text()).to.equal("run-1 is already running; nothing done\n");
      const pau = fakeCliContext(api.env);
      expect(await runCli(["vm", "restore", "pau-1"], pau.ctx)).to.equal(4);
      expect(pau.err.text()).to.equal(`paddock: error: ${paused} (ERR_VM_ALREADY_RUNNING, HTTP 409)\n`);
      const sus = fakeCliContext(api.env);
      expect(await runCli(["vm", "restore", "sus-1"], sus.ctx), sus.err.text()).to.equal(0);
      expect(sus.out.text()).to.equal("sus-1 restored\n");
      expect(asked).to.deep.equal(["POST /vm/run-1/restore?wait=agent", "GET /vm/run-1", "POST /vm/pau-1/restore", "GET /vm/pau-1", "POST /vm/sus-1/restore"]);
    } finally {
      await api.close();
    }
  });
});

describe("paddock vm relaunch of a running or paused VM (cli/vm-lifecycle-commands.ts vmRelaunch)", () => {
  it("a running VM (409 ERR_VM_ALREADY_RUNNING, GET says Running) is a no-op, exit 0 (--json: the VM); a paused one stays an error, exit 4", async () => {
    const paused = "VM pau-1 is paused, not stopped; thaw it with POST /vm/pau-1/resume (CLI: paddock vm resume pau-1)";
    const status = new Map([["run-1", "Running"], ["pau-1", "Paused"], ["stop-1", "Stopped"]]);
    const api = await fakeApi((req, res) => {
      const [, , h = "", verb] = (req.url ?? "").split("?")[0]?.split("/") ?? [];
      if (req.method === "GET") return json(res, 200, { hostname: h, status: status.get(h), ip: "198.18.0.2" });
      // The daemon's answers (tenant-daemon/vm/vm-power.ts relaunch).
      if (verb === "relaunch" && h === "run-1") return json(res, 409, { error: "VM run-1 is already running", code: "ERR_VM_ALREADY_RUNNING" });
      if (verb === "relaunch" && h === "pau-1") return json(res, 409, { error: paused, code: "ERR_VM_ALREADY_RUNNING" });
      return json(res, 200, { hostname: h, status: "Running", ip: "198.18.0.3" });
    });
    try {
      const run = fakeCliContext(api.env);
      expect(await runCli(["vm", "relaunch", "run-1"], run.ctx), run.err.text()).to.equal(0);
      expect(run.out.text()).to.equal("run-1 is already running; nothing done\n");
      const js = fakeCliContext(api.env);
      expect(await runCli(["vm", "relaunch", "run-1", "--json"], js.ctx), js.err.text()).to.equal(0);
      expect(JSON.parse(js.out.text())).to.deep.include({ hostname: "run-1", status: "Running" });
      const pau = fakeCliContext(api.env);
      expect(await runCli(["vm", "relaunch", "pau-1"], pau.ctx)).to.equal(4);
      expect(pau.err.text()).to.equal(`paddock: error: ${paused} (ERR_VM_ALREADY_RUNNING, HTTP 409)\n`);
      const stop = fakeCliContext(api.env);
      expect(await runCli(["vm", "relaunch", "stop-1"], stop.ctx), stop.err.text()).to.equal(0);
      expect(stop.out.text()).to.equal("stop-1 relaunched (198.18.0.3)\n");
    } finally {
      await api.close();
    }
  });
});

describe("paddock vm pause|suspend of a VM its idle rule had paused or suspended (Paddock-Idle-Claimed)", () => {
  it("says the VM was idle-paused (idle-suspended) and is the user's now: requests no longer wake it, and how to undo it", async () => {
    const api = await fakeApi((req, res) => {
      const verb = (req.url ?? "").split("/")[3] ?? "";
      const state = verb === "pause" ? "paused" : "suspended";
      res.writeHead(200, { "content-type": "text/plain", "Paddock-Already": state, "Paddock-Idle-Claimed": verb });
      res.end("OK");
    });
    try {
      const p = fakeCliContext(api.env);
      expect(await runCli(["vm", "pause", "dev-2"], p.ctx), p.err.text()).to.equal(0);
      expect(p.out.text()).to.equal("dev-2 was idle-paused; now paused by you: requests no longer wake it (they answer 409 ERR_VM_PAUSED); resume with `paddock vm resume dev-2`\n");
      const s = fakeCliContext(api.env);
      expect(await runCli(["vm", "suspend", "dev-2"], s.ctx), s.err.text()).to.equal(0);
      expect(s.out.text()).to.equal("dev-2 was idle-suspended; now suspended by you: requests no longer restore it; restore with `paddock vm restore dev-2`\n");
      expect(api.requests).to.deep.equal(["POST /vm/dev-2/pause", "POST /vm/dev-2/suspend"]);
    } finally {
      await api.close();
    }
  });
});

describe("paddock vm resume|pause of a suspended or stopped VM (cli/vm-lifecycle-commands.ts simpleVerb)", () => {
  it("prints the daemon's ERR_VM_NOT_RUNNING as it is (exit 4): the daemon's message owns the advice, the CLI adds none and asks nothing more", async () => {
    // The daemon's messages (tenant-daemon/vm/vm-power.ts vmNotRunningError) for a suspended, a stopped and a running VM.
    const said = new Map([
      ["sus-1", "VM sus-1 is not paused: it is suspended (checkpointed to disk); bring it back with POST /vm/sus-1/restore (CLI: paddock vm restore sus-1)"],
      ["stop-1", "VM stop-1 is not paused: it is stopped; boot it again with POST /vm/stop-1/relaunch (CLI: paddock vm relaunch stop-1)"],
      ["odd-1", "VM odd-1 is not paused"],
      // A message without a route (another server): still not added to.
      ["bare-1", "VM bare-1 is not paused"],
    ]);
    const status = new Map([["sus-1", "Suspended"], ["stop-1", "Stopped"], ["odd-1", "Running"], ["bare-1", "Suspended"]]);
    const asked: string[] = [];
    const api = await fakeApi((req, res) => {
      asked.push(`${req.method ?? ""} ${req.url ?? ""}`);
      const [, , h = "", verb] = (req.url ?? "").split("/");
      if (req.method === "GET" && verb === undefined) return json(res, 200, { hostname: h, status: status.get(h) });
      json(res, 409, { error: said.get(h), code: "ERR_VM_NOT_RUNNING" });
    });
    try {
      for (const h of said.keys()) {
        const c = fakeCliContext(api.env);
        expect(await runCli(["vm", "resume", h], c.ctx)).to.equal(4);
        expect(c.err.text()).to.equal(`paddock: error: ${said.get(h) ?? ""} (ERR_VM_NOT_RUNNING, HTTP 409)\n`);
      }
      expect(asked.filter((a) => a.startsWith("GET /vm/")), "no status lookup to build advice").to.deep.equal([]);
    } finally {
      await api.close();
    }
  });
});

describe("paddock vm: errors that name what is missing (cli/vm-common.ts withVm, cli/vm-commands.ts)", () => {
  it("an unknown VM is named (the API's message is 'VM not found'); a 401 says where a token goes", async () => {
    let auth = true;
    const api = await fakeApi((req, res) => {
      if (!auth) return json(res, 401, { error: "missing, invalid, expired or revoked token", code: "ERR_AUTH_REQUIRED" });
      if ((req.url ?? "").startsWith("/nodes")) return json(res, 200, []);
      json(res, 404, { error: "VM not found", code: "ERR_VM_NOT_FOUND" });
    });
    try {
      const missing = fakeCliContext(api.env);
      expect(await runCli(["vm", "get", "sbox-9"], missing.ctx)).to.equal(3);
      expect(missing.err.text()).to.equal("paddock: error: VM \"sbox-9\" not found: no VM has that hostname or a name=sbox-9 tag (paddock vm list) (ERR_VM_NOT_FOUND, HTTP 404)\n");
      auth = false;
      const denied = fakeCliContext(api.env);
      expect(await runCli(["vm", "list"], denied.ctx)).to.equal(1);
      expect(denied.err.text()).to.equal("paddock: error: missing, invalid, expired or revoked token; pass a live tenant token with --token or --token-file, or set PADDOCK_TOKEN (`paddock tenant get ID` lists a tenant's tokens with their expiry; `paddock tenant token ID` issues a new one) (ERR_AUTH_REQUIRED, HTTP 401)\n");
    } finally {
      await api.close();
    }
  });
});

describe("paddock vm shell: a connection closed before the session ended (cli/vm-shell-command.ts)", () => {
  /** A fake tenant API whose shell upgrade sends one Data frame, then `end` (a SessionClose frame, or a cut). */
  async function shellApi(end: "session-close" | "cut"): Promise<{ env: NodeJS.ProcessEnv; close: () => Promise<void> }> {
    const { WebSocketServer } = await import("ws");
    const wss = new WebSocketServer({ noServer: true });
    const server = http.createServer((req, res) => json(res, 200, { hostname: "sbox-1", status: "Running" }));
    server.on("upgrade", (req, socket, head) => wss.handleUpgrade(req, socket, head, (ws) => {
      ws.send(encodeFrame(FrameType.Data, Buffer.from("hello\n")), () => {
        if (end === "session-close") ws.send(encodeFrame(FrameType.SessionClose), () => ws.close());
        else ws.terminate(); // what the gateway does when it ends a session
      });
    }));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    return {
      env: { PADDOCK_URL: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, PADDOCK_TOKEN: "tok" },
      close: () => new Promise<void>((resolve) => {
        for (const c of wss.clients) c.terminate();
        server.closeAllConnections();
        server.close(() => resolve());
      }),
    };
  }

  it("exits 0 once the server ends the session (SessionClose), and 1 with ERR_SHELL_SESSION_CUT when the connection is cut", async () => {
    for (const end of ["session-close", "cut"] as const) {
      const api = await shellApi(end);
      try {
        const { ctx, out, err } = fakeCliContext(api.env);
        const code = await runCli(["vm", "shell", "sbox-1"], ctx);
        expect(out.text(), end).to.equal("hello\n");
        if (end === "session-close") {
          expect(code, err.text()).to.equal(0);
          expect(err.text()).to.equal("");
        } else {
          expect(code).to.equal(1);
          expect(err.text()).to.match(/^paddock: error: the shell's connection closed \(WebSocket code 1006\) before the shell ended; .*likely causes: the tenant's API token was revoked, .*\(ERR_SHELL_SESSION_CUT\)\n$/);
        }
      } finally {
        await api.close();
      }
    }
  });
});

describe("paddock vm exec: a stream cut before its exit frame (cli/vm-exec-command.ts)", () => {
  it("prints what was cut and the likely causes with ERR_EXEC_STREAM_CUT and exits 1, keeping the output relayed so far", async () => {
    const api = await fakeApi((_req, res) => {
      res.writeHead(200, { "content-type": "application/x-ndjson" });
      res.write(JSON.stringify({ type: "stdout", encoding: "base64", data: Buffer.from("partial\n").toString("base64") }) + "\n", () => {
        // What the gateway does to a started answer when it ends the session (supervisor/gateway-session.ts).
        setTimeout(() => res.destroy(), 20);
      });
    });
    try {
      const { ctx, out, err } = fakeCliContext(api.env);
      expect(await runCli(["vm", "exec", "sbox-1", "--", "sleep", "60"], ctx)).to.equal(1);
      expect(out.text()).to.equal("partial\n");
      const lines = err.text().split("\n").filter((l) => l !== "");
      expect(lines, err.text()).to.have.length(1);
      expect(lines[0]).to.match(/^paddock: error: the exec stream was cut \((ECONNRESET|aborted)\) before the command's exit frame, so its outcome is unknown; likely causes: the tenant's API token was revoked, the tenant was suspended or deleted, .*\(ERR_EXEC_STREAM_CUT\)$/);
      expect(lines[0], "a VM that ended cuts the stream too").to.contain("or the VM itself ended (a guest exit, an OOM kill, its pids limit under gVisor: `paddock events` says why)");
    } finally {
      await api.close();
    }
  });

  it("a stream that ends cleanly without the exit frame gets the same code; one cut after the exit frame keeps the command's code", async () => {
    const frames = (withExit: boolean): string => [
      { type: "stdout", data: "hi\n" },
      ...(withExit ? [{ type: "exit", exit_code: 7 }] : []),
    ].map((f) => JSON.stringify(f) + "\n").join("");
    let withExit = false;
    const api = await fakeApi((_req, res) => {
      res.writeHead(200, { "content-type": "application/x-ndjson" });
      if (!withExit) {
        res.end(frames(false));
        return;
      }
      res.write(frames(true), () => setTimeout(() => res.destroy(), 20));
    });
    try {
      const ended = fakeCliContext(api.env);
      expect(await runCli(["vm", "exec", "sbox-1", "--", "true"], ended.ctx)).to.equal(1);
      expect(ended.err.text()).to.match(/^paddock: error: the exec stream ended before the command's exit frame.*\(ERR_EXEC_STREAM_CUT\)\n$/);
      withExit = true;
      const after = fakeCliContext(api.env);
      expect(await runCli(["vm", "exec", "sbox-1", "--", "true"], after.ctx), after.err.text()).to.equal(7);
      expect(after.out.text()).to.equal("hi\n");
      expect(after.err.text()).to.equal("");
    } finally {
      await api.close();
    }
  });
});

describe("paddock vm launch --wait userdata reports a failed script (cli/vm-lifecycle-commands.ts vmLaunch)", () => {
  it("exits 1 naming the exit code when the VM's health has userdata_exit_code ≠ 0; 0 when it is 0; --wait agent asks nothing more", async () => {
    let exitCode = 3;
    const api = await fakeApi((req, res) => {
      const url = req.url ?? "";
      if (req.method === "POST" && url.startsWith("/hostgroup/sbox/nodes")) json(res, 201, { hostname: "sbox-1", hostgroup: "sbox", ip: "169.254.0.2", persistent: false });
      else if (req.method === "GET" && url === "/vm/sbox-1/health") json(res, 200, { hostname: "sbox-1", agent_uptime: 1, userdata_ran: true, userdata_exit_code: exitCode });
      else json(res, 404, { error: "no", code: "ERR_NOT_FOUND" });
    });
    try {
      const failed = fakeCliContext(api.env);
      expect(await runCli(["vm", "launch", "sbox", "--userdata", "exit 3", "--wait", "userdata"], failed.ctx)).to.equal(1);
      expect(failed.out.text()).to.match(/^HOSTNAME\s+GROUP/).and.to.contain("sbox-1");
      expect(failed.err.text()).to.contain("VM sbox-1 is up, but its userdata exited 3; its output: paddock vm logs sbox-1");
      exitCode = 0;
      const ok = fakeCliContext(api.env);
      expect(await runCli(["vm", "launch", "sbox", "--userdata", "true", "--wait", "userdata"], ok.ctx), ok.err.text()).to.equal(0);
      const agent = fakeCliContext(api.env);
      expect(await runCli(["vm", "launch", "sbox", "--wait", "agent"], agent.ctx), agent.err.text()).to.equal(0);
      expect(api.requests.filter((r) => r.endsWith("/health"))).to.have.length(2);
    } finally {
      await api.close();
    }
  });
});
