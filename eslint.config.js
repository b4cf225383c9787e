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
  // Dependency direction (DESIGN.md §2): supervisor → shared ← tenant-daemon; the apps never import each other.
  {
    files: ["shared/**/*.ts"],
    rules: {
      "no-restricted-imports": ["error", { patterns: [{ group: ["**/supervisor/**", "**/tenant-daemon/**", "**/cli/**"], message: "shared/ imports neither app (DESIGN.md §2)" }] }],
    },
  },
  {
    files: ["supervisor/**/*.ts"],
    rules: {
      "no-restricted-imports": ["error", { patterns: [{ group: ["**/tenant-daemon/**"], message: "supervisor/ never imports tenant-daemon/ (DESIGN.md §2)" }] }],
    },
  },
  {
    files: ["tenant-daemon/**/*.ts"],
    rules: {
      "no-restricted-imports": ["error", { patterns: [{ group: ["**/supervisor/**"], message: "tenant-daemon/ never imports supervisor/ (DESIGN.md §2)" }] }],
    },
  },
);
