/**
 * `paddock events [--since-id N]`: the tenant's VM lifecycle events (`GET /events`, a
 * server-sent-events stream; docs/slicer-api.md "Lifecycle events") as NDJSON on stdout, one
 * event per line, following until interrupted (Ctrl-C). A stream the server ends (a restart, a
 * slow-client drop) is reopened with the last id seen as `Last-Event-ID`, after the server's
 * `retry:` delay, as EventSource does; the first connection failing is an error.
 */
import type http from "node:http";
import { parseFlags, parseIntFlag, expectPositionals } from "./args.js";
import { type ApiClient } from "./api-client.js";
import { ApiError, EXIT } from "./cli-errors.js";
import { writeOut, type CliContext } from "./cli-context.js";
import { TARGET_FLAGS, clientFor } from "./vm-common.js";
import { SseParser, type SseMessage } from "../shared/events/sse-parser.js";

/** Help text of `paddock events`. */
export const EVENTS_HELP = `usage: paddock events [--since-id N]

Print the tenant's VM lifecycle events as NDJSON (one JSON object per line: id, type, hostname,
hostgroup, reason, time, and per type deadline/action/oom_kills, fallback_from/refusal on an idle
pause that replaced a refused suspend) and follow until Ctrl-C.
--since-id N starts after event N (what Last-Event-ID does): the events held after it come
first; when N is older than what the daemon holds a {"type":"reset",…} line comes first.
Without it, only events from now on. Reconnects with the last id when the stream ends.
`;

/**
 * The NDJSON line of one frame: the event's JSON as sent; for `reset` and `dropped` (whose data
 * carries no `type`) the data with `type` set to the event name first. Pure.
 */
export function frameLine(f: SseMessage): string {
  let obj: unknown;
  try {
    obj = JSON.parse(f.data);
  } catch {
    obj = { data: f.data };
  }
  const body = typeof obj === "object" && obj !== null && !Array.isArray(obj) ? (obj as Record<string, unknown>) : { data: obj };
  return JSON.stringify(typeof body.type === "string" ? body : { type: f.event, ...body }) + "\n";
}

/**
 * Read one opened stream to its end (or its failure), printing each frame and keeping the last
 * id seen and the server's retry delay in `state`.
 */
async function relay(ctx: CliContext, res: http.IncomingMessage, state: { lastId: string | undefined; retryMs: number }): Promise<void> {
  const parser = new SseParser();
  res.setEncoding("utf8");
  try {
    for await (const chunk of res) {
      for (const f of parser.push(chunk as string)) {
        if (f.id !== undefined && f.id !== "") state.lastId = f.id;
        await writeOut(ctx.stdout, frameLine(f));
      }
    }
  } catch {
    // A connection cut mid-stream: reconnect like a clean end.
  }
  if (parser.retryMs !== undefined) state.retryMs = parser.retryMs;
}

/** Open `GET /events` (after `lastId` when set). @throws ApiError, ConnectError */
function openStream(client: ApiClient, lastId: string | undefined): Promise<http.IncomingMessage> {
  return client.send("GET", "/events", { headers: { Accept: "text/event-stream", ...(lastId === undefined ? {} : { "Last-Event-ID": lastId }) } });
}

/** `paddock events [--since-id N]`. Runs until the process is interrupted. @returns the exit code (only on an error) */
export async function eventsCommand(ctx: CliContext, argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags(argv, { ...TARGET_FLAGS, "since-id": { type: "string" } }, { noArguments: true });
  if (values.help) {
    await writeOut(ctx.stdout, EVENTS_HELP);
    return EXIT.OK;
  }
  expectPositionals(positionals, 0, 0, "paddock events [--since-id N]");
  const since = parseIntFlag(values["since-id"], "--since-id", { min: 0 });
  const client = clientFor(ctx, values);
  const state = { lastId: since === undefined ? undefined : String(since), retryMs: 2000 };
  // The first connection's errors are the command's. Later, a server that cannot be reached (or
  // answers 5xx, e.g. a daemon restarting) is retried; a 4xx (the token revoked, the tenant
  // deleted) is final: retrying would wait for ever.
  let res: http.IncomingMessage | undefined = await openStream(client, state.lastId);
  for (;;) {
    if (res !== undefined) await relay(ctx, res, state);
    await new Promise((r) => setTimeout(r, state.retryMs));
    res = await openStream(client, state.lastId).catch((err: unknown) => {
      if (err instanceof ApiError && err.status >= 400 && err.status < 500) throw err;
      return undefined;
    });
  }
}
