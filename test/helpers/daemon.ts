/**
 * The tests' tenant-daemon fixture: {@link TestDaemon} starts a REAL daemon
 * (`node dist/tenant-daemon/main.js up <config>`) on a fresh temp dir and cleans up after it;
 * with the project root, the daemon entry point, random tenant ids and isolated ranges, and
 * the mount and loop-device probes the leak checks use. It lives in scripts/lib/daemon-harness.ts
 * so the benchmarks share it (scripts/ never imports test/).
 */
export {
  DAEMON_MAIN,
  PROJECT_ROOT,
  TestDaemon,
  leftoversOf,
  loopDevicesUnder,
  mountsUnder,
  randomIsolatedRange,
  randomTenantId,
  type TestDaemonOptions,
} from "../../scripts/lib/daemon-harness.js";
