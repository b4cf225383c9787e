/**
 * The import graph's rules (dependency-cruiser; `npm run lint` runs `depcruise` with this file).
 * They keep the folders of docs/ARCHITECTURE.md ("Folders") what that page says they are:
 *
 *   supervisor/ ──→ shared/ ←── tenant-daemon/        cli/ ──→ shared/
 *   scripts/ ──→ anything but test/                    test/ ──→ anything
 *
 * - shared/ imports neither app, nor cli/, scripts/ or test/;
 * - the two apps never import each other;
 * - inside tenant-daemon/ no import runs back up: a subfolder never imports the API layer
 *   (tenant-daemon/api/) or the entry point (tenant-daemon/main.ts);
 * - the guest agent (tenant-daemon/agent/) runs inside VMs from one bundle
 *   (scripts/build-agent-bundle.ts): node builtins, node-pty and the few shared/ files it needs;
 * - cli/ talks to the apps over HTTP: it imports shared/ and packages, except `paddock daemon up`
 *   and `paddock up`, which run the apps' entry points in-process;
 * - product code (shared/, supervisor/, tenant-daemon/, cli/) imports no devDependency, and
 *   nothing outside test/ imports test/;
 * - no import cycles.
 *
 * A rule's `comment` is what depcruise prints next to a violation.
 */
/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: "no-circular",
      severity: "error",
      comment: "An import cycle: split the shared piece out, or pass the state object instead of importing its owner.",
      from: {},
      to: { circular: true },
    },
    {
      name: "shared-imports-no-app",
      severity: "error",
      comment: "shared/ is code both apps use: it imports neither app, nor cli/, scripts/ or test/.",
      from: { path: "^shared/" },
      to: { path: "^(supervisor|tenant-daemon|cli|scripts|test)/" },
    },
    {
      name: "supervisor-not-tenant-daemon",
      severity: "error",
      comment: "supervisor/ never imports tenant-daemon/ (what both need belongs in shared/).",
      from: { path: "^supervisor/" },
      to: { path: "^(tenant-daemon|cli|scripts|test)/" },
    },
    {
      name: "tenant-daemon-not-supervisor",
      severity: "error",
      comment: "tenant-daemon/ never imports supervisor/ (what both need belongs in shared/).",
      from: { path: "^tenant-daemon/" },
      to: { path: "^(supervisor|cli|scripts|test)/" },
    },
    {
      name: "tenant-daemon-no-import-up",
      severity: "error",
      comment: "Inside tenant-daemon/ imports run down: a subfolder never imports the API layer (tenant-daemon/api/) or the entry point (tenant-daemon/main.ts).",
      from: { path: "^tenant-daemon/[^/]+/", pathNot: "^tenant-daemon/api/" },
      to: { path: "^tenant-daemon/(api/|main\\.ts$)" },
    },
    {
      name: "tenant-daemon-api-not-main",
      severity: "error",
      comment: "The API layer never imports the daemon's entry point (tenant-daemon/main.ts).",
      from: { path: "^tenant-daemon/api/" },
      to: { path: "^tenant-daemon/main\\.ts$" },
    },
    {
      name: "agent-self-contained",
      severity: "error",
      comment: "The guest agent runs in VMs from one bundle: it imports node builtins, node-pty, its own folder and only shared/errors.ts, shared/time.ts, shared/cjs-code-cache.ts (its loader), shared/http/read-body.ts and shared/slicer/shell-frames.ts.",
      from: { path: "^tenant-daemon/agent/" },
      to: {
        dependencyTypesNot: ["core"],
        pathNot: ["^tenant-daemon/agent/", "^shared/(errors|time|cjs-code-cache|http/read-body|slicer/shell-frames)\\.ts$", "^node_modules/node-pty/"],
      },
    },
    {
      name: "cli-only-shared",
      severity: "error",
      comment: "cli/ talks to the apps over HTTP: it imports shared/, cli/ and packages. `paddock daemon up` / `paddock up` (cli/paddock.ts) run the apps' main.ts in-process.",
      from: { path: "^cli/" },
      to: {
        path: "^(supervisor|tenant-daemon|scripts|test)/",
        // `paddock daemon up` and `paddock up` run the apps in this process.
        pathNot: "^(supervisor|tenant-daemon)/main\\.ts$",
      },
    },
    {
      name: "cli-paddock-entry-points-only-from-paddock",
      severity: "error",
      comment: "Only cli/paddock.ts runs the apps' entry points (`paddock daemon up`, `paddock up`).",
      from: { path: "^cli/", pathNot: "^cli/paddock\\.ts$" },
      to: { path: "^(supervisor|tenant-daemon)/main\\.ts$" },
    },
    {
      name: "scripts-not-test",
      severity: "error",
      comment: "scripts/ never imports test/: what both need lives in scripts/lib/ (test/helpers re-exports it).",
      from: { path: "^scripts/" },
      to: { path: "^test/" },
    },
    {
      name: "product-no-dev-dependencies",
      severity: "error",
      comment: "Product code (shared/, supervisor/, tenant-daemon/, cli/) runs without devDependencies installed.",
      from: { path: "^(shared|supervisor|tenant-daemon|cli)/" },
      to: { dependencyTypes: ["npm-dev"] },
    },
    {
      name: "not-to-unresolvable",
      severity: "error",
      comment: "An import that resolves to no file or package.",
      from: {},
      to: { couldNotResolve: true },
    },
  ],
  options: {
    doNotFollow: { path: "node_modules" },
    exclude: { path: "^dist/" },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: "tsconfig.json" },
    enhancedResolveOptions: {
      exportsFields: ["exports"],
      conditionNames: ["import", "require", "node", "default", "types"],
      extensions: [".ts", ".js", ".cjs", ".mjs", ".json", ".d.ts"],
    },
    reporterOptions: { text: { highlightFocused: true } },
  },
};
