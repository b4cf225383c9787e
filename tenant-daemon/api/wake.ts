/**
 * Which API requests count as activity of a VM and which wake a VM its host group's idle rule
 * paused or suspended (tenant-daemon/vm/vm-idle.ts). Decided per row of the route table
 * (routes.ts); {@link wakeMiddleware} applies it to plain requests (run after the bearer
 * check, before the routes: server.ts), {@link holdForUpgrade} to the WebSocket upgrades
 * (ws-upgrade.ts, after its own bearer and route checks).
 *
 * | routes | activity | wakes |
 * |---|---|---|
 * | agent: `/vm/{h}/health`, `exec…`, `cp`, `fs/*`; upgrades: `shell`, `forward`; preview: every method and WebSocket upgrade on `/vm/{h}/preview/{port}/…` | yes, until the response or session ends | yes |
 * | `POST /vm/{h}/suspend` | yes | a paused one (it is then suspended); a suspended one is left as is |
 * | `PATCH /vm/{h}/tags`, `POST /vm/{h}/{shutdown,relaunch,pause,resume,restore,commit}` | yes | no: they act on the VM as it is (pause makes an idle pause the client's own; resume/restore are the explicit wake) |
 * | `GET /vm/{h}`, `GET /vm/{h}/tags`, `GET /vm/{h}/logs`, `GET /node/{h}/stats`, every list, `DELETE` of a node | no | no |
 *
 * So a dashboard polling `/nodes`, `GET /vm/{h}` or stats never keeps a VM awake, and a VM a
 * client paused (`POST /pause`) is never woken by requests: they answer 409 as before.
 */
import type { Duplex } from "node:stream";
import type { ApiRequest, ApiResponse } from "./http-util.js";
import { PaddockError, isPaddockError } from "../../shared/errors.js";
import { ROUTES, type HttpMethod, type Route } from "./routes.js";

/** What the API layer uses of the idle tracker (VmIdle). */
export interface VmActivity {
  /** An activity of VM `hostname` starts; call the result once when it ends. */
  begin(hostname: string): () => void;
  /** Wake VM `hostname` if the idle rule paused or suspended it (`onlyPaused`: not a suspended one). */
  wake(hostname: string, opts?: { onlyPaused?: boolean }): Promise<void>;
}

/** What a route does to a VM's idleness: counts as activity, and wakes it (`wake-paused`: only from a pause). */
export type WakePolicy = "activity" | "wake" | "wake-paused";

/** The policy of a route of the table; undefined: neither activity nor a wake. */
export function wakePolicyOf(route: Route): WakePolicy | undefined {
  if (!route.path.includes(":hostname")) return undefined;
  switch (route.group) {
    case "agent":
    case "upgrade":
    case "preview":
      return "wake";
    case "commit":
      return "activity";
    case "vm":
      if (route.handler === "suspend") return "wake-paused";
      return ["patchTags", "shutdown", "relaunch", "pause", "resume", "restore"].includes(route.handler) ? "activity" : undefined;
    default:
      return undefined;
  }
}

interface Rule {
  /** `*`: any method (the preview rows stand for every method). */
  method: HttpMethod | "*";
  pattern: RegExp;
  policy: WakePolicy;
}

/** The rules of `routes` with a policy: their method and exact path regex (`:hostname` is group 1). */
function compileRules(routes: readonly Route[]): Rule[] {
  const rules: Rule[] = [];
  for (const route of routes) {
    const policy = wakePolicyOf(route);
    if (policy === undefined || route.group === "upgrade") continue;
    if (route.group === "preview") {
      // `/vm/:hostname/preview/:port{/*rest}` and its `/` form: every method, any rest.
      if (!rules.some((r) => r.method === "*")) rules.push({ method: "*", pattern: /^\/vm\/([^/]+)\/preview\/[^/]+(?:\/.*)?$/, policy });
      continue;
    }
    const source = route.path.replace(/[.*+?^${}()|[\]\\]/g, "\\$&").replace(/:(\w+)/g, (_m, n: string) => (n === "hostname" ? "([^/]+)" : "[^/]+"));
    rules.push({ method: route.method, pattern: new RegExp(`^${source}$`), policy });
  }
  return rules;
}

/** The hostname of a path segment, undefined when it does not decode. */
function decodeSegment(s: string): string | undefined {
  try {
    return decodeURIComponent(s);
  } catch {
    return undefined;
  }
}

/**
 * A wake that failed: 503 ERR_VM_WAKE_FAILED with the cause's message (the VM stays paused or
 * suspended, or was restored and its agent does not answer); a VM deleted meanwhile keeps its
 * 404.
 */
function wakeFailed(err: unknown, hostname: string): unknown {
  if (isPaddockError(err, "ERR_VM_NOT_FOUND")) return err;
  return new PaddockError("ERR_VM_WAKE_FAILED", `VM ${hostname} was idle and could not be woken: ${(err as Error).message}`, { cause: err });
}

/**
 * The request step: for a request whose route has a policy (see the file header), mark the VM
 * active until the response closes, and wake it first when the policy says so.
 * @returns undefined when the request goes on at once, else a promise of the wake: it rejects
 *   with PaddockError ERR_VM_WAKE_FAILED (503), or the VM's ERR_VM_NOT_FOUND.
 */
export function wakeMiddleware(activity: VmActivity, routes: readonly Route[] = ROUTES): (req: ApiRequest, res: ApiResponse) => Promise<void> | undefined {
  const rules = compileRules(routes);
  return (req, res) => {
    let hit: { hostname: string; policy: WakePolicy } | undefined;
    for (const r of rules) {
      if (r.method !== "*" && r.method !== req.method) continue;
      const m = r.pattern.exec(req.path);
      const hostname = m === null ? undefined : decodeSegment(m[1] as string);
      if (hostname !== undefined) {
        hit = { hostname, policy: r.policy };
        break;
      }
    }
    if (hit === undefined) return undefined;
    const { hostname, policy } = hit;
    res.once("close", activity.begin(hostname));
    if (policy === "activity") return undefined;
    return activity.wake(hostname, { onlyPaused: policy === "wake-paused" }).catch((err: unknown) => {
      throw wakeFailed(err, hostname);
    });
  };
}

/**
 * For a WebSocket upgrade to VM `hostname` (shell, forward) that passed its checks: mark the VM
 * active until `socket` closes (the session's whole life), and wake it.
 * @throws PaddockError ERR_VM_WAKE_FAILED (503) when the wake fails.
 */
export async function holdForUpgrade(activity: VmActivity, hostname: string, socket: Duplex): Promise<void> {
  socket.once("close", activity.begin(hostname));
  try {
    await activity.wake(hostname);
  } catch (err) {
    throw wakeFailed(err, hostname);
  }
}
