/**
 * One log line per answered request (`msg: "request"`), so an operator can follow a request
 * from the gateway's log into the daemon's: `method`, `path` (without the query), `status`,
 * `duration_ms`, and, when the request came through the supervisor's gateway, the
 * `request_id` and `forwarded_for` it set (supervisor/gateway.ts strips any a client sent).
 * Probes (`/healthz`, `/metrics`) are not logged. Header values are logged only when they have
 * the shape the gateway gives them, so a direct socket client cannot write arbitrary text
 * into the log.
 */
import type { ApiRequest, ApiResponse } from "./http-util.js";
import type { Logger } from "../../shared/logger.js";

const QUIET_PATHS = new Set(["/healthz", "/metrics"]);
/** A request id as the gateway makes them (a UUID), or any short token of the same alphabet. */
const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;
/** An IPv4/IPv6 address or `unix` (what the gateway puts in X-Forwarded-For). */
const FORWARDED_FOR = /^[0-9A-Fa-f.:]{2,45}$|^unix$/;

function header(req: ApiRequest, name: string, shape: RegExp): string | undefined {
  const v = req.headers[name];
  return typeof v === "string" && shape.test(v) ? v : undefined;
}

/**
 * The request step writing the access line at info level when the answer finishes (or the
 * client goes away first: `aborted: true`, with `status` only when the answer's head was sent:
 * before that node's default 200 would claim an answer nobody got).
 */
export function accessLog(logger: Logger): (req: ApiRequest, res: ApiResponse) => void {
  return (req, res) => {
    const q = req.originalUrl.indexOf("?");
    const pathOnly = q === -1 ? req.originalUrl : req.originalUrl.slice(0, q);
    if (QUIET_PATHS.has(pathOnly) || !logger.enabled("info")) return;
    const started = process.hrtime.bigint();
    let done = false;
    const write = (aborted: boolean): void => {
      if (done) return;
      done = true;
      logger.info("request", {
        method: req.method,
        path: pathOnly,
        ...(aborted && !res.headersSent ? {} : { status: res.statusCode }),
        duration_ms: Math.round(Number(process.hrtime.bigint() - started) / 1e5) / 10,
        request_id: header(req, "x-request-id", REQUEST_ID),
        forwarded_for: header(req, "x-forwarded-for", FORWARDED_FOR),
        ...(aborted ? { aborted: true } : {}),
      });
    };
    res.on("finish", () => write(false));
    res.on("close", () => write(!res.writableFinished));
  };
}
