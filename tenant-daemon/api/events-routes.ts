/**
 * `GET /events`: the tenant's VM lifecycle events as a server-sent-events stream. The stream,
 * its `Last-Event-ID` resume, `reset`, heartbeat and slow-client drop are
 * shared/events/sse-stream.ts; each event's data is
 * `{"id":…,"type":…,"hostname":…,"hostgroup":…,"reason":…,"time":…}`
 * (tenant-daemon/events/event-log.ts). After a `reset` the client should list `/nodes` again.
 */
import type { Logger } from "../../shared/logger.js";
import { lastEventId, streamEvents } from "../../shared/events/sse-stream.js";
import type { EventLog } from "../events/event-log.js";
import type { Handler } from "./http-util.js";
import type { RouteHandlers } from "./route-mount.js";

export { DEFAULT_MAX_BUFFERED_BYTES, HEARTBEAT_MS } from "../../shared/events/sse-stream.js";

/** What the events route reads. */
export interface EventRouteDeps {
  events: EventLog;
  logger: Logger;
  /** Unsent bytes per client above which it is dropped (default DEFAULT_MAX_BUFFERED_BYTES). */
  maxBufferedBytes?: number;
}

/** The handlers of routes.ts group `events`. */
export function createEventHandlers(deps: EventRouteDeps): RouteHandlers["events"] {
  const log = deps.logger.child({ component: "events" });
  const stream: Handler = (req, res) => {
    streamEvents(res, deps.events, { lastId: lastEventId(req.headers, req.query), log, ...(deps.maxBufferedBytes !== undefined ? { maxBufferedBytes: deps.maxBufferedBytes } : {}) });
  };
  return { stream };
}
