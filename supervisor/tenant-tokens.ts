/**
 * Tenant tokens: the index the gateway authenticates against (rebuilt from the registry after
 * every committed change), issuing extra tokens and revoking them. Tokens are stored as
 * SHA-256 hashes only (supervisor/tokens.ts); a revocation ends the token's live gateway
 * sessions at once.
 */
import { PaddockError } from "../shared/errors.js";
import type { RegistryState } from "./tenant-registry.js";
import { issueToken, TokenIndex } from "./tokens.js";
import type { Actor, TenantContext } from "./tenant-context.js";
import type { IssueTokenInput } from "./tenant-inputs.js";

/** A token owner in the gateway's index. */
export interface TokenOwner {
  tenantId: string;
  tokenId: string;
}

/** A newly issued token: the secret (shown once), its id and times (RFC 3339). */
export interface IssuedTenantToken {
  token: string;
  id: string;
  expiresAt: string | undefined;
  createdAt: string;
}

/** What {@link TenantTokens.revoke} did: the revocation time (RFC 3339) and whether the token already was revoked. */
export interface RevokedToken {
  revokedAt: string;
  alreadyRevoked: boolean;
}

/** The tenants' tokens and the index of their hashes. */
export class TenantTokens {
  private readonly ctx: TenantContext;
  private index = new TokenIndex<TokenOwner>();

  /** Subscribes to the registry: the index follows every committed change (and is built now). */
  constructor(ctx: TenantContext) {
    this.ctx = ctx;
    ctx.registry.onChange((state) => this.rebuild(state));
  }

  private rebuild(state: RegistryState): void {
    const entries = [];
    for (const t of Object.values(state.tenants)) {
      for (const k of t.tokens) {
        entries.push({ hash: k.hash, expiresAtMs: k.expiresAt ? Date.parse(k.expiresAt) : undefined, revoked: k.revokedAt !== undefined, value: { tenantId: t.id, tokenId: k.id } });
      }
    }
    this.index = new TokenIndex(entries);
  }

  /**
   * Resolve a presented bearer token (constant work whether or not it exists).
   * @returns the tenant id and token id, or undefined (unknown, expired, revoked, missing).
   */
  authenticate(token: string | undefined): TokenOwner | undefined {
    return this.index.verify(token);
  }

  /**
   * Issue an extra token (older ones stay valid until revoked or expired). Tokens revoked or
   * expired more than a day ago are dropped from the record.
   * @throws PaddockError `ERR_TENANT_NOT_FOUND`, `ERR_TENANT_INVALID` (being deleted).
   */
  async issue(id: string, input: IssueTokenInput, who: Actor): Promise<IssuedTenantToken> {
    const { expiresAt } = input;
    const issued = issueToken();
    const createdAt = new Date().toISOString();
    await this.ctx.registry.updateTenant(id, (t) => {
      if (t.status === "deleting") throw new PaddockError("ERR_TENANT_INVALID", `tenant ${id} is being deleted`);
      // Keep the record list bounded: drop tokens revoked or expired more than a day ago.
      const cutoff = Date.now() - 86_400_000;
      t.tokens = t.tokens.filter((k) => !(k.revokedAt && Date.parse(k.revokedAt) < cutoff) && !(k.expiresAt && Date.parse(k.expiresAt) < cutoff));
      t.tokens.push({ id: issued.id, hash: issued.hash, createdAt, ...(expiresAt ? { expiresAt } : {}) });
    });
    this.ctx.recordAudit(who, "token.issue", id, { token_id: issued.id, expires_at: expiresAt });
    return { token: issued.token, id: issued.id, expiresAt, createdAt };
  }

  /**
   * Revoke a token (idempotent for an already revoked one) and end its live gateway sessions
   * (a request not yet answered gets 401). Either way one `token.revoke` audit entry is
   * written; that of an already revoked token carries
   * `already_revoked: true`, so it is told apart from the real revoke. The no-op writes
   * nothing to the registry (no fsync, no new committed copy, no token index rebuild).
   * @returns when the token was revoked (RFC 3339; the earlier time if it already was) and
   *   whether it already was, both read under the registry's lock in the same update as the
   *   revoke, so of two racing revokes exactly one is the real one.
   * @throws PaddockError `ERR_TOKEN_NOT_FOUND`, `ERR_TENANT_NOT_FOUND`.
   */
  async revoke(id: string, tokenId: string, who: Actor): Promise<RevokedToken> {
    const out = await this.ctx.registry.updateTenant(id, (t): RevokedToken => {
      const k = t.tokens.find((x) => x.id === tokenId);
      if (!k) throw new PaddockError("ERR_TOKEN_NOT_FOUND", `tenant ${id} has no token ${JSON.stringify(tokenId)}`);
      const alreadyRevoked = k.revokedAt !== undefined;
      k.revokedAt ??= new Date().toISOString();
      return { revokedAt: k.revokedAt, alreadyRevoked };
    }, { unchanged: (r) => r.alreadyRevoked });
    this.ctx.endSessions(id, tokenId, new PaddockError("ERR_AUTH_REQUIRED", "missing, invalid, expired or revoked token"));
    this.ctx.recordAudit(who, "token.revoke", id, { token_id: tokenId, ...(out.alreadyRevoked ? { already_revoked: true } : {}) });
    return out;
  }
}
