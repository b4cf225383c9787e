/**
 * The tests' HTTP client: {@link request} (Unix socket or TCP, JSON or raw bodies) and
 * {@link freePort}. It lives in scripts/lib/http-client.ts so the benchmarks share it (scripts/
 * never imports test/).
 */
export { freePort, request, type Target, type TestResponse } from "../../scripts/lib/http-client.js";
