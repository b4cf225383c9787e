import { expect } from "chai";
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { formatCidr, type Cidr } from "../../shared/cidr.js";
import { NFT_MALLOC_TUNABLE, listSetCidrs, nftEnv, parseChainNames, parseOwnRangeIndex, parseSetCidrs } from "../../shared/nft-cli.js";

// `nft -j list sets` of nftables 1.0.6 (Debian 12) on tables made for this test: a prefix, a
// bare address, a range, an empty set, a set of family ip, a table with no set.
const SAMPLE = {"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"set": {"family": "inet", "name": "own_ranges", "table": "paddock-a", "type": "ipv4_addr", "handle": 1, "flags": ["interval"], "elem": [{"prefix": {"addr": "169.254.100.0", "len": 22}}, {"prefix": {"addr": "198.18.8.0", "len": 24}}, "198.18.9.7"]}}, {"set": {"family": "inet", "name": "foreign_ranges", "table": "paddock-a", "type": "ipv4_addr", "handle": 2, "flags": ["interval"], "elem": [{"prefix": {"addr": "169.254.104.0", "len": 22}}]}}, {"set": {"family": "inet", "name": "own_ranges", "table": "paddock-b", "type": "ipv4_addr", "handle": 1, "flags": ["interval"], "elem": [{"range": ["198.18.1.0", "198.18.1.9"]}]}}, {"set": {"family": "inet", "name": "own_ranges", "table": "paddock-c", "type": "ipv4_addr", "handle": 1, "flags": ["interval"]}}, {"set": {"family": "ip", "name": "own_ranges", "table": "paddock-d", "type": "ipv4_addr", "handle": 1, "flags": ["interval"], "elem": [{"prefix": {"addr": "198.18.2.0", "len": 24}}]}}]};

describe("network: nft-cli parseSetCidrs", () => {
  it("reads every inet table's set of that name in one listing, and nothing else", () => {
    const m = parseSetCidrs(JSON.stringify(SAMPLE), "own_ranges");
    const out = Object.fromEntries([...m].map(([t, cs]) => [t, cs.map(formatCidr)]));
    expect(out).to.deep.equal({
      "paddock-a": ["169.254.100.0/22", "198.18.8.0/24", "198.18.9.7/32"],
      "paddock-b": ["198.18.1.0/32", "198.18.1.9/32"],
      "paddock-c": [],
    });
    expect([...parseSetCidrs(JSON.stringify(SAMPLE), "foreign_ranges").keys()]).to.deep.equal(["paddock-a"]);
  });

  it("turns only the entries that can be the set asked for into objects; the result is the whole document's", () => {
    // Text in comments that looks like a set key, a set name, braces and escapes; a map entry;
    // a big set of another name (what every tenant's foreign_ranges is on a host with many tenants).
    const tricky = { nftables: [
      ...SAMPLE.nftables,
      { set: { family: "inet", name: "vm_ifaces", table: "paddock-e", type: "ifname", handle: 3, comment: 'x {"set": {"name": "own_ranges"}} \\" ] }', elem: ["pk\"a", "pk}b"] } },
      { map: { family: "inet", name: "own_ranges", table: "paddock-e", type: "ifname", map: "verdict", handle: 4 } },
      { set: { family: "inet", name: "foreign_ranges", table: "paddock-f", type: "ipv4_addr", handle: 5, flags: ["interval"], elem: Array.from({ length: 5000 }, (_, i) => ({ prefix: { addr: `198.${18 + (i >> 8)}.${i & 255}.0`, len: 24 } })) } },
      { set: { family: "inet", name: "own_ranges", table: "paddock-f", type: "ipv4_addr", handle: 6, flags: ["interval"], comment: "} ] {", elem: [{ prefix: { addr: "198.18.77.0", len: 24 } }] } },
    ] };
    const whole = (text: string): Map<string, Cidr[]> => {
      const out = new Map<string, Cidr[]>();
      for (const e of (JSON.parse(text) as typeof tricky).nftables) {
        const st = (e as { set?: { family: string; name: string; table: string; elem?: unknown[] } }).set;
        if (st?.family === "inet" && st.name === "own_ranges") out.set(st.table, parseSetCidrs(JSON.stringify({ nftables: [e] }), "own_ranges").get(st.table) ?? []);
      }
      return out;
    };
    for (const text of [JSON.stringify(tricky), JSON.stringify(tricky, null, 2), JSON.stringify(tricky).replaceAll(",", ", ").replaceAll(":", ": ")]) {
      const parsed: number[] = [];
      const realParse = JSON.parse;
      JSON.parse = ((t: string, r?: Parameters<typeof JSON.parse>[1]) => (parsed.push(t.length), realParse(t, r))) as typeof JSON.parse;
      let m: Map<string, Cidr[]>;
      try {
        m = parseSetCidrs(text, "own_ranges");
      } finally {
        JSON.parse = realParse;
      }
      expect([...m.keys()]).to.deep.equal(["paddock-a", "paddock-b", "paddock-c", "paddock-f"]);
      expect(m).to.deep.equal(whole(text));
      expect(Math.max(...parsed), "longest text parsed").to.be.below(1000);
    }
  });

  it("text that is not a listing is parsed whole: its errors are JSON.parse's", () => {
    expect(() => parseSetCidrs('{"nftables": [{"set": {"family": "inet", "name": "own_ranges"', "own_ranges")).to.throw(SyntaxError);
    expect(() => parseSetCidrs('{"nftables": [] } x', "own_ranges")).to.throw(SyntaxError);
    expect([...parseSetCidrs('{"other": 1, "nftables": [{"set": {"family": "inet", "name": "own_ranges", "table": "t", "elem": ["198.18.0.9"]}}]}', "own_ranges").keys()]).to.deep.equal(["t"]);
  });

  it("an empty listing (no tables) is an empty map", () => {
    expect(parseSetCidrs("", "own_ranges").size).to.equal(0);
    expect(parseSetCidrs('{"nftables": [{"metainfo": {"version": "1.0.6"}}]}', "own_ranges").size).to.equal(0);
  });
});

/** `nft -j` set and chain entries as nftables 1.0.6 prints them with `-t` (base chains also carry hook fields). */
const chain = (table: string, name: string, family = "inet"): unknown => ({ chain: { family, table, name, handle: 1 } });
const set = (table: string, name: string, family = "inet"): unknown => ({ set: { family, table, name, type: "ipv4_addr", handle: 1, flags: ["interval"] } });
const META = { metainfo: { version: "1.0.6", release_name: "Lester Gooch #5", json_schema_version: 1 } };
/** What `nft -t -j 'list sets inet; list chains inet'` prints: one document per command, one per line. */
const listing = (sets: unknown[], chains: unknown[]): string => `${JSON.stringify({ nftables: [META, ...sets] })}\n${JSON.stringify({ nftables: [META, ...chains] })}\n`;

describe("network: nft-cli parseOwnRangeIndex", () => {
  it("maps each prefixed table with an own_ranges set to its own_range_<cidr> chains when every such table has the index chain", () => {
    const text = listing(
      [set("paddock-a", "own_ranges"), set("paddock-a", "foreign_ranges"), set("paddock-b", "own_ranges"), set("paddock-c", "own_ranges"), set("other", "own_ranges"), set("paddock-d", "own_ranges", "ip")],
      [
        chain("paddock-a", "own_ranges_index"), chain("paddock-a", "own_range_169.254.100.0/22"), chain("paddock-a", "own_range_198.18.8.0/24"), chain("paddock-a", "forward"),
        chain("paddock-b", "own_ranges_index"), chain("paddock-b", "postrouting"),
        chain("paddock-c", "own_ranges_index"), chain("paddock-c", "own_range_not-a-cidr"),
        // No own_ranges set: not a table the set listing would report either.
        chain("paddock-e", "forward"), chain("other", "forward"), chain("paddock-d", "forward", "ip"),
      ],
    );
    const m = parseOwnRangeIndex(text, "paddock-");
    expect(m && Object.fromEntries([...m].map(([t, cs]) => [t, cs.map(formatCidr)]))).to.deep.equal({
      "paddock-a": ["169.254.100.0/22", "198.18.8.0/24"], "paddock-b": [], "paddock-c": [],
    });
  });

  it("is undefined when a prefixed table with an own_ranges set has no index, with chains or without (its ranges are only in the set)", () => {
    const indexed = [chain("paddock-a", "own_ranges_index")];
    expect(parseOwnRangeIndex(listing([set("paddock-a", "own_ranges"), set("paddock-old", "own_ranges")], [...indexed, chain("paddock-old", "forward")]), "paddock-")).to.equal(undefined);
    expect(parseOwnRangeIndex(listing([set("paddock-a", "own_ranges"), set("paddock-bare", "own_ranges")], indexed), "paddock-")).to.equal(undefined);
    expect(parseOwnRangeIndex(listing([], []), "paddock-")?.size).to.equal(0);
    expect(parseOwnRangeIndex("", "paddock-")?.size).to.equal(0);
    expect(parseOwnRangeIndex('{"nftables": [', "paddock-")).to.equal(undefined);
  });

  it("parseChainNames lists every prefixed inet table's chains from the same listing, with or without an own_ranges set", () => {
    const text = listing([set("paddock-a", "own_ranges")], [chain("paddock-a", "forward"), chain("paddock-a-ct", "prerouting"), chain("paddock-a-ct", "cfg_0123456789abcdef"), chain("other", "x"), chain("paddock-d", "forward", "ip")]);
    expect(Object.fromEntries(parseChainNames(text, "paddock-"))).to.deep.equal({ "paddock-a": ["forward"], "paddock-a-ct": ["prerouting", "cfg_0123456789abcdef"] });
    expect(parseChainNames('{"nftables": [', "paddock-").size).to.equal(0);
  });
});

describe("network: nft-cli nft's environment", () => {
  let dir: string;
  let savedPath: string | undefined;
  before(async () => {
    // A stand-in `nft` first on PATH that answers `-j list sets` with the GLIBC_TUNABLES it was
    // given as a table name: what reaches the process nft-cli.ts starts.
    dir = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-nftenv-"));
    await fs.writeFile(path.join(dir, "nft"), `#!/bin/sh\nprintf '{"nftables":[{"set":{"family":"inet","name":"own_ranges","table":"%s","elem":[]}}]}' "$GLIBC_TUNABLES"\n`, { mode: 0o755 });
    savedPath = process.env.PATH;
    process.env.PATH = `${dir}:${savedPath ?? ""}`;
  });
  after(async () => {
    process.env.PATH = savedPath;
    await fs.rm(dir, { recursive: true, force: true });
  });

  it("nft runs with the malloc tunable that halves its CPU on a host with many tables", async () => {
    expect([...(await listSetCidrs("own_ranges")).keys()]).to.deep.equal([nftEnv().GLIBC_TUNABLES]);
    expect(nftEnv().GLIBC_TUNABLES).to.include(NFT_MALLOC_TUNABLE);
  });

  it("keeps the daemon's own tunables and replaces only its mmap threshold", () => {
    expect(nftEnv(undefined)).to.deep.equal({ GLIBC_TUNABLES: NFT_MALLOC_TUNABLE });
    expect(nftEnv("glibc.malloc.arena_max=2:glibc.malloc.mmap_threshold=65536")).to.deep.equal({ GLIBC_TUNABLES: `glibc.malloc.arena_max=2:${NFT_MALLOC_TUNABLE}` });
  });
});

describe("network: nft-cli reads nft's output through a file", () => {
  let dir: string;
  let savedPath: string | undefined;
  before(async () => {
    // A stand-in `nft` that fails its first run after printing a longer listing than the
    // second run's, and answers the second with one table: what the retry reads.
    dir = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-nftfile-"));
    const big = JSON.stringify({ nftables: Array.from({ length: 2000 }, (_, i) => ({ set: { family: "inet", name: "own_ranges", table: `first-${i}`, elem: [] } })) });
    await fs.writeFile(path.join(dir, "first.json"), big);
    await fs.writeFile(path.join(dir, "nft"), `#!/bin/sh\nif [ ! -e "${dir}/ran" ]; then : > "${dir}/ran"; cat "${dir}/first.json"; exit 1; fi\nprintf '{"nftables":[{"set":{"family":"inet","name":"own_ranges","table":"second","elem":["198.18.0.1"]}}]}'\n`, { mode: 0o755 });
    savedPath = process.env.PATH;
    process.env.PATH = `${dir}:${savedPath ?? ""}`;
  });
  after(async () => {
    process.env.PATH = savedPath;
    await fs.rm(dir, { recursive: true, force: true });
  });

  it("a failed first run is retried and only the retry's output is read", async () => {
    const m = await listSetCidrs("own_ranges");
    expect(Object.fromEntries([...m].map(([t, cs]) => [t, cs.map(formatCidr)]))).to.deep.equal({ second: ["198.18.0.1/32"] });
  });
});
