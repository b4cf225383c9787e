// @ts-check
import js from "@eslint/js";
import tseslint from "typescript-eslint";

export default tseslint.config(
  { ignores: ["dist/**", "node_modules/**", "eslint.config.js"] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ["**/*.ts"],
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      "@typescript-eslint/no-floating-promises": "error",
      "@typescript-eslint/no-misused-promises": ["error", { checksVoidReturn: false }],
      "@typescript-eslint/no-explicit-any": "error",
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
      "no-empty": ["error", { allowEmptyCatch: true }],
    },
  },
  // Guest-side helper scripts (run by the guest's node, CommonJS, no build step).
  {
    files: ["scripts/demo/**/*.js"],
    languageOptions: {
      sourceType: "commonjs",
      globals: { require: "readonly", module: "writable", process: "readonly", console: "readonly", Buffer: "readonly", setTimeout: "readonly", clearTimeout: "readonly" },
    },
    rules: { "@typescript-eslint/no-require-imports": "off" },
  },
  // The import-graph rules (dependency-cruiser's config, CommonJS).
  {
    files: [".dependency-cruiser.cjs"],
    languageOptions: { sourceType: "commonjs", globals: { module: "writable" } },
  },
  // Import boundaries (docs/ARCHITECTURE.md "Folders"): supervisor → shared ← tenant-daemon, the
  // apps never import each other, cli/ imports shared/, scripts/ never imports test/. These give
  // editor feedback on static imports; .dependency-cruiser.cjs (run by `npm run lint`) checks the
  // whole graph, dynamic imports, packages and cycles too. A later block replaces an earlier
  // one's no-restricted-imports for the files both match, so each block lists all its patterns.
  {
    files: ["shared/**/*.ts"],
    rules: {
      "no-restricted-imports": ["error", { patterns: [{ group: ["**/supervisor/**", "**/tenant-daemon/**", "**/cli/**", "**/scripts/**", "**/test/**"], message: "shared/ imports neither app, nor cli/, scripts/ or test/ (docs/ARCHITECTURE.md)" }] }],
    },
  },
  {
    files: ["supervisor/**/*.ts"],
    rules: {
      "no-restricted-imports": ["error", { patterns: [{ group: ["**/tenant-daemon/**", "**/cli/**", "**/scripts/**", "**/test/**"], message: "supervisor/ never imports tenant-daemon/ (shared code goes in shared/; docs/ARCHITECTURE.md)" }] }],
    },
  },
  {
    files: ["tenant-daemon/**/*.ts"],
    rules: {
      "no-restricted-imports": ["error", { patterns: [{ group: ["**/supervisor/**", "**/cli/**", "**/scripts/**", "**/test/**"], message: "tenant-daemon/ never imports supervisor/ (shared code goes in shared/; docs/ARCHITECTURE.md)" }] }],
    },
  },
  {
    files: ["tenant-daemon/*/**/*.ts"],
    ignores: ["tenant-daemon/api/**"],
    rules: {
      "no-restricted-imports": ["error", { patterns: [
        { group: ["**/supervisor/**", "**/cli/**", "**/scripts/**", "**/test/**"], message: "tenant-daemon/ never imports supervisor/ (shared code goes in shared/; docs/ARCHITECTURE.md)" },
        { group: ["../api/*", "../../api/*", "../main.js", "../../main.js"], message: "imports in tenant-daemon/ run down: a subfolder never imports tenant-daemon/api/ or tenant-daemon/main.ts" },
      ] }],
    },
  },
  {
    files: ["tenant-daemon/api/**/*.ts"],
    rules: {
      "no-restricted-imports": ["error", { patterns: [
        { group: ["**/supervisor/**", "**/cli/**", "**/scripts/**", "**/test/**"], message: "tenant-daemon/ never imports supervisor/ (shared code goes in shared/; docs/ARCHITECTURE.md)" },
        { group: ["../main.js"], message: "the API layer never imports tenant-daemon/main.ts" },
      ] }],
    },
  },
  {
    files: ["tenant-daemon/agent/**/*.ts"],
    rules: {
      "no-restricted-imports": ["error", { patterns: [
        { regex: "^\\.\\./(?!\\.\\./shared/(errors|time|cjs-code-cache|http/read-body|slicer/shell-frames)\\.js$)", message: "the guest agent runs in VMs from one bundle: its own folder, node builtins, node-pty, shared/errors.ts, shared/time.ts, shared/cjs-code-cache.ts, shared/http/read-body.ts and shared/slicer/shell-frames.ts only" },
      ] }],
    },
  },
  {
    files: ["cli/**/*.ts"],
    rules: {
      "no-restricted-imports": ["error", { patterns: [{ group: ["**/supervisor/**", "**/tenant-daemon/**", "**/scripts/**", "**/test/**"], message: "cli/ talks to the apps over HTTP: it imports shared/ and packages (cli/paddock.ts runs the apps' main.ts by dynamic import)" }] }],
    },
  },
  {
    files: ["scripts/**/*.ts"],
    rules: {
      "no-restricted-imports": ["error", { patterns: [{ group: ["**/test/**"], message: "scripts/ never imports test/: shared test and bench code lives in scripts/lib/" }] }],
    },
  },
);
