/**
 * How the egress proxy forwards one HTTP request it has let through: `http-proxy`
 * (https://github.com/http-party/node-http-proxy) to the checked upstream address, the
 * `Host` header naming the host the rule matched (and over TLS the SNI and certificate check
 * too: Node's agent derives the server name from the Host header the request is made with,
 * lib/_http_agent.js `calculateServerName`, so it is set before the request is made, not only in
 * `proxyReq`, which runs after the socket is), the client's `Proxy-Authorization`
 * always removed and, when the rule carries a secret, the client's `Authorization` replaced
 * by the secret's. Upstream certificates are verified against node's roots and the extra CAs
 * of upstream-cas.ts (PADDOCK_EXTRA_CA_CERTS, `upstreamCaPems`; the one secure context is built on
 * the first HTTPS upstream request). Response headers that carry a secret value are dropped.
 */
import http from "node:http";
import https from "node:https";
import httpProxy from "http-proxy";
import type { Logger } from "../../shared/logger.js";
import { UpstreamCas } from "./upstream-cas.js";

/** Where and how one request goes. */
export interface ForwardTarget {
  /** The checked upstream address. */
  ip: string;
  port: number;
  /** The host the rule matched (Host header, SNI). */
  host: string;
  /** HTTPS upstream (a request from an intercepted TLS tunnel). */
  tls: boolean;
  /** The `Authorization` value to send instead of the client's, from the rule's secret. */
  authorization: string | undefined;
  /** Path and query to request. */
  path: string;
}

interface Ctx {
  target: ForwardTarget;
  secrets: readonly string[];
  count: (direction: "up" | "down", n: number) => void;
  proxyReq?: http.ClientRequest;
}

/** The Host header naming `target`'s host (port left out when it is the scheme's default; IPv6 in brackets). */
function hostHeader(target: ForwardTarget): string {
  const defaultPort = target.tls ? 443 : 80;
  return target.port === defaultPort ? target.host : `${target.host.includes(":") ? `[${target.host}]` : target.host}:${target.port}`;
}

/** The forwarder: one http-proxy server and agents for all requests of the engine. */
export class HttpForwarder {
  private readonly proxy: httpProxy;
  private httpsAgentOnce: https.Agent | undefined;
  private readonly httpAgent = new http.Agent({ keepAlive: false });
  private readonly ctx = new WeakMap<http.IncomingMessage, Ctx>();
  private readonly cas: UpstreamCas;

  /**
   * @param opts.upstreamCaFile PEM file of extra trusted CAs (PADDOCK_EXTRA_CA_CERTS), read on the
   *   first HTTPS upstream request; opts.upstreamCaPems more extra CAs (PEM text);
   *   opts.idleTimeoutMs: upstream idle bound.
   */
  constructor(private readonly opts: { upstreamCaFile?: string | undefined; upstreamCaPems: readonly string[]; idleTimeoutMs: number; log: Logger }) {
    this.cas = new UpstreamCas({ caFile: opts.upstreamCaFile, extraPems: opts.upstreamCaPems, log: opts.log });
    this.proxy = httpProxy.createProxyServer({ xfwd: false, changeOrigin: false, ignorePath: true, proxyTimeout: opts.idleTimeoutMs, secure: true });
    this.proxy.on("proxyReq", (proxyReq, req) => {
      const c = this.ctx.get(req);
      if (!c) return;
      c.proxyReq = proxyReq;
      proxyReq.removeHeader("proxy-authorization");
      proxyReq.removeHeader("proxy-connection");
      proxyReq.setHeader("host", hostHeader(c.target));
      if (c.target.authorization !== undefined) {
        proxyReq.removeHeader("authorization");
        proxyReq.setHeader("authorization", c.target.authorization);
      }
    });
    this.proxy.on("proxyRes", (proxyRes, req) => {
      const c = this.ctx.get(req);
      if (!c) return;
      for (const [name, value] of Object.entries(proxyRes.headers)) {
        const text = Array.isArray(value) ? value.join("\n") : String(value ?? "");
        if (c.secrets.some((s) => s.length >= 4 && text.includes(s))) delete proxyRes.headers[name];
      }
      proxyRes.on("data", (chunk: Buffer) => c.count("down", chunk.length));
    });
  }

  /**
   * Forward `req` to `target`, answering on `res`; resolves when the answer has ended or the
   * client went away. An upstream failure before the answer started is a 502 JSON answer.
   * `count` gets the body bytes each way; `secrets` are the values never to echo in headers.
   */
  forward(req: http.IncomingMessage, res: http.ServerResponse, target: ForwardTarget, count: Ctx["count"], secrets: readonly string[]): Promise<void> {
    const c: Ctx = { target, secrets, count };
    this.ctx.set(req, c);
    // The upstream request is made with the client's headers (http-proxy copies them), and node's
    // agent takes the TLS server name, so the certificate check, from its Host header when it
    // makes the socket, before `proxyReq` runs: the rule's host here, whatever the client sent.
    req.headers.host = hostHeader(target);
    return new Promise<void>((resolve) => {
      res.on("close", () => {
        // Node no longer aborts the upstream request when the client goes away.
        if (!res.writableFinished) c.proxyReq?.destroy();
        resolve();
      });
      this.proxy.web(req, res, {
        target: { protocol: target.tls ? "https:" : "http:", host: target.ip, port: target.port, path: target.path } as unknown as httpProxy.ProxyTargetUrl,
        agent: target.tls ? this.httpsAgent() : this.httpAgent,
      }, (err) => {
        this.opts.log.info("egress upstream failed", { host: target.host, port: target.port, err: (err as NodeJS.ErrnoException).code ?? err.message });
        if (res.headersSent) res.destroy();
        else res.writeHead(502, { "content-type": "application/json", connection: "close" }).end(JSON.stringify({ error: `upstream ${target.host}:${target.port} failed`, code: "ERR_EGRESS_UPSTREAM_FAILED" }));
      });
      req.on("data", (chunk: Buffer) => count("up", chunk.length));
    });
  }

  /** The agent of HTTPS upstreams, made on first use with the one upstream secure context. */
  private httpsAgent(): https.Agent {
    if (this.httpsAgentOnce === undefined) {
      const secureContext = this.cas.secureContext();
      this.httpsAgentOnce = new https.Agent({ keepAlive: false, ...(secureContext !== undefined ? { secureContext } : {}) });
    }
    return this.httpsAgentOnce;
  }

  /** Drop idle upstream sockets. */
  close(): void {
    this.httpsAgentOnce?.destroy();
    this.httpAgent.destroy();
    this.proxy.close();
  }
}
