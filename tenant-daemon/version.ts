/** Paddock's version as the tenant daemon reports it (`GET /info`, the agent's boot file). */
export const PADDOCK_VERSION = "0.1.0";
