/**
 * The host end of the reverse agent channel (guest side: tenant-daemon/agent/reverse-transport.ts),
 * for runtimes that cannot hand a VM an inherited listener (gVisor 20221219 has no fd passing:
 * docs/gvisor-findings.md §5). The daemon binds a Unix listener in a directory it made and only
 * it can write (`<run>/vms/<h>/agent-dial/`), which the runtime binds read-only into the guest
 * (runsc `--host-uds=open` lets the guest connect to it). The guest agent dials out and keeps a
 * few idle connections open; the daemon takes one per request and is the HTTP client on it.
 *
 * Boundary: the host never resolves a path a guest can write. The directory is host-made and
 * root-owned; only the socket's owner (the VM's root uid on the host, e.g. the tenant's
 * `uidStart`) and root can connect, so no other VM's or tenant's process can offer connections.
 * A guest's root can still connect (it could replace its agent anyway): every answer must still
 * carry the VM's per-boot proof (agent-endpoint.ts), which is what refuses a stranger's answer.
 *
 * Bounds: at most `maxIdle` idle connections are kept (more are closed at once), and a
 * connection that sends bytes while idle is dropped at once (a real agent speaks only after a
 * request), so nothing a guest sends ahead can be read as the answer to a later request.
 */
import { promises as fs } from "node:fs";
import net from "node:net";
import path from "node:path";
import { PaddockError } from "../../shared/errors.js";

/** Idle connections kept per VM by default; the agent keeps 3 open (reverse-transport.ts). */
export const DEFAULT_MAX_IDLE = 8;
/** Default wait for an idle connection, ms. */
export const DEFAULT_TAKE_TIMEOUT_MS = 10_000;

/** Options of {@link AgentDialPool.listen}. */
export interface AgentDialPoolOptions {
  /** VM name, for messages. */
  hostname: string;
  /**
   * Host path of the listener, e.g. `<run>/vms/<h>/agent-dial/agent.sock` (≤ 107 bytes). Its
   * directory is created (mode 0700 while binding) and must not be reachable by any guest for
   * writing; a stale socket file is removed first.
   */
  socketPath: string;
  /**
   * Who may connect: the socket becomes `owner.uid:owner.gid` mode 0600 and its directory
   * `root:owner.gid` mode 0710. Undefined ⇒ socket and directory stay the daemon's, 0600/0700
   * (host-process tests).
   */
  owner?: { uid: number; gid: number };
  /** Idle connections kept at most; default {@link DEFAULT_MAX_IDLE}. */
  maxIdle?: number;
}

interface Waiter {
  resolve: (s: net.Socket) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

/** One VM's listener and its idle agent connections. */
export class AgentDialPool {
  readonly hostname: string;
  readonly socketPath: string;
  private readonly server: net.Server;
  private readonly maxIdle: number;
  private readonly idle: net.Socket[] = [];
  private readonly waiters: Waiter[] = [];
  /** Every connection not yet closed, idle or taken: destroyed by {@link close}. */
  private readonly open = new Set<net.Socket>();
  private closed = false;

  private constructor(opts: AgentDialPoolOptions, server: net.Server) {
    this.hostname = opts.hostname;
    this.socketPath = opts.socketPath;
    this.maxIdle = opts.maxIdle ?? DEFAULT_MAX_IDLE;
    this.server = server;
    server.on("connection", (s) => this.accepted(s));
  }

  /**
   * Bind the listener (see {@link AgentDialPoolOptions} for modes and ownership) and start
   * accepting.
   * @throws PaddockError ERR_RUNTIME_FAILED when the directory or listener cannot be made.
   */
  static async listen(opts: AgentDialPoolOptions): Promise<AgentDialPool> {
    const dir = path.dirname(opts.socketPath);
    const server = net.createServer();
    try {
      await fs.mkdir(dir, { recursive: true, mode: 0o700 });
      await fs.chmod(dir, 0o700);
      await fs.rm(opts.socketPath, { force: true });
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen(opts.socketPath, () => {
          server.off("error", reject);
          resolve();
        });
      });
      // The directory is host-made and 0700 root while these run, so the path cannot be swapped.
      await fs.chmod(opts.socketPath, 0o600);
      if (opts.owner !== undefined) {
        await fs.chown(opts.socketPath, opts.owner.uid, opts.owner.gid);
        await fs.chown(dir, 0, opts.owner.gid);
        await fs.chmod(dir, 0o710);
      }
    } catch (err) {
      server.close();
      await fs.rm(opts.socketPath, { force: true }).catch(() => undefined);
      throw new PaddockError("ERR_RUNTIME_FAILED", `agent channel of VM ${opts.hostname}: cannot listen on ${opts.socketPath}: ${(err as Error).message}`, { cause: err });
    }
    server.on("error", () => undefined);
    return new AgentDialPool(opts, server);
  }

  /** Idle connections right now. */
  idleCount(): number {
    return this.idle.length;
  }

  /** Connections open right now (idle and taken). */
  openCount(): number {
    return this.open.size;
  }

  /**
   * Take one idle connection for one request (the caller owns it and ends it), waiting up to
   * `timeoutMs` for the agent to dial one.
   * @throws PaddockError ERR_VM_AGENT_UNAVAILABLE (503) when none arrives in time or the pool
   *   is closed.
   */
  take(timeoutMs = DEFAULT_TAKE_TIMEOUT_MS): Promise<net.Socket> {
    if (this.closed) return Promise.reject(this.closedError());
    for (;;) {
      const s = this.idle.shift();
      if (s === undefined) break;
      if (this.usable(s)) return Promise.resolve(this.handOut(s));
      s.destroy();
    }
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        resolve,
        reject,
        timer: setTimeout(() => {
          const i = this.waiters.indexOf(waiter);
          if (i >= 0) this.waiters.splice(i, 1);
          reject(new PaddockError("ERR_VM_AGENT_UNAVAILABLE", `guest agent of VM ${this.hostname} did not connect within ${timeoutMs} ms`));
        }, timeoutMs),
      };
      this.waiters.push(waiter);
    });
  }

  /**
   * Stop listening, destroy every connection (idle or taken), fail waiting takes with
   * ERR_VM_AGENT_UNAVAILABLE and remove the socket file. Idempotent; for VM teardown.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const stopped = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const w of this.waiters.splice(0)) {
      clearTimeout(w.timer);
      w.reject(this.closedError());
    }
    for (const s of this.open) s.destroy();
    this.open.clear();
    this.idle.length = 0;
    await stopped;
    await fs.rm(this.socketPath, { force: true });
  }

  private accepted(s: net.Socket): void {
    s.on("error", () => undefined);
    if (this.closed) {
      s.destroy();
      return;
    }
    this.open.add(s);
    s.once("close", () => {
      this.open.delete(s);
      const i = this.idle.indexOf(s);
      if (i >= 0) this.idle.splice(i, 1);
    });
    const w = this.waiters.shift();
    if (w !== undefined) {
      clearTimeout(w.timer);
      w.resolve(s);
      return;
    }
    if (this.idle.length >= this.maxIdle) {
      s.destroy();
      return;
    }
    this.idle.push(s);
    s.on("data", this.idleTalk);
  }

  /** A byte on an idle connection: not an agent waiting for a request; drop it. */
  private readonly idleTalk = function (this: net.Socket): void {
    this.destroy();
  };

  /** Hand `s` to a request: it stops being watched for idle talk (the stream stays flowing). */
  private handOut(s: net.Socket): net.Socket {
    s.off("data", this.idleTalk);
    return s;
  }

  /** Still open both ways, and silent since it was accepted. */
  private usable(s: net.Socket): boolean {
    return !s.destroyed && s.readable && s.writable && s.readableLength === 0;
  }

  private closedError(): PaddockError {
    return new PaddockError("ERR_VM_AGENT_UNAVAILABLE", `the agent channel of VM ${this.hostname} is closed`);
  }
}

/**
 * The live pools of one tenant's VMs, by hostname: what the `AgentEndpoint`s (agent-endpoint.ts) of reverse-channel
 * VMs carry (tenant-daemon/vm/vm-paths.ts), opened at boot and closed at teardown.
 */
export class AgentDialPools {
  private readonly pools = new Map<string, AgentDialPool>();

  /**
   * Bind `hostname`'s listener (an earlier pool of the same VM is closed first).
   * @throws PaddockError ERR_RUNTIME_FAILED from {@link AgentDialPool.listen}.
   */
  async open(opts: AgentDialPoolOptions): Promise<AgentDialPool> {
    await this.close(opts.hostname);
    const pool = await AgentDialPool.listen(opts);
    this.pools.set(opts.hostname, pool);
    return pool;
  }

  /** The VM's pool, or undefined when it has none (inherited-listener VMs). */
  get(hostname: string): AgentDialPool | undefined {
    return this.pools.get(hostname);
  }

  /** Close and forget the VM's pool; no-op without one. */
  async close(hostname: string): Promise<void> {
    const pool = this.pools.get(hostname);
    if (pool === undefined) return;
    this.pools.delete(hostname);
    await pool.close();
  }

  /** Close every pool (daemon shutdown). */
  async closeAll(): Promise<void> {
    await Promise.all([...this.pools.keys()].map((h) => this.close(h)));
  }
}
