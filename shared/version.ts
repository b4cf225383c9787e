/**
 * Paddock's version, one constant for every part: the CLI's `--version`, the tenant daemon's
 * `GET /info`, the agent's boot file and the guest agent's health answer. A unit test
 * (test/unit/version.test.ts) keeps it equal to package.json's `version`.
 */
export const PADDOCK_VERSION = "0.1.0";
