/**
 * VM records → the Slicer REST API's JSON (https://docs.slicervm.com): node objects, create
 * responses, status strings and arch names. Pure.
 */
import os from "node:os";
import { matchesTagFilter, type TagFilter } from "./vm-request.js";
import type { CreateResponseWire, NodeWire, VmPhase, VmRecord, WireStatus } from "./vm-types.js";

/** Go's GOARCH (`amd64`, `arm64`) for `/info` and create responses, as Slicer reports it. */
export function goArch(): string {
  return os.arch() === "x64" ? "amd64" : os.arch();
}
/** Kernel-style arch (`x86_64`, `aarch64`) for node lists, as in Slicer's examples. */
export function unameArch(): string {
  return os.arch() === "x64" ? "x86_64" : os.arch() === "arm64" ? "aarch64" : os.arch();
}

/** The wire status of a live phase: paused ⇒ Paused; suspended ⇒ Suspended; stopped/stopping ⇒ Stopped; else Running. */
export function wireStatus(phase: VmPhase): WireStatus {
  if (phase === "paused") return "Paused";
  if (phase === "suspended") return "Suspended";
  if (phase === "stopped" || phase === "stopping") return "Stopped";
  return "Running";
}

/** The node object (`GET /nodes`) of a VM: its record and live phase. `ip` is bare (no prefix). */
export function toNode(vm: { record: VmRecord; phase: VmPhase }): NodeWire {
  const r = vm.record;
  return {
    hostname: r.hostname, hostgroup: r.hostGroup, ip: r.ipCidr.split("/")[0] ?? "", ram_bytes: r.ramBytes, cpus: r.cpus,
    created_at: r.createdAt, arch: unameArch(), tags: [...r.tags], status: wireStatus(vm.phase), persistent: r.persistent,
  };
}

/** The create / relaunch response of a VM. `ip` keeps its prefix (`a.b.c.d/nn`). */
export function toCreateResponse(r: VmRecord): CreateResponseWire {
  return { hostname: r.hostname, hostgroup: r.hostGroup, ip: r.ipCidr, created_at: r.createdAt, arch: goArch(), persistent: r.persistent };
}

/**
 * Node objects of `vms` (in their order), skipping those being deleted, optionally only of
 * `hostGroup`, and tag-filtered.
 */
export function listNodes(vms: Iterable<{ record: VmRecord; phase: VmPhase }>, filter: TagFilter, hostGroup: string | undefined): NodeWire[] {
  const out: NodeWire[] = [];
  for (const vm of vms) {
    if (vm.phase === "deleting") continue;
    if (hostGroup !== undefined && vm.record.hostGroup !== hostGroup) continue;
    if (!matchesTagFilter(vm.record.tags, filter)) continue;
    out.push(toNode(vm));
  }
  return out;
}

/**
 * Counts of `vms` by wire status per host group: every group of `groups` is present (zeros
 * included); VMs being deleted and VMs of other groups are not counted.
 */
export function countByStatus(groups: readonly { name: string }[], vms: Iterable<{ record: VmRecord; phase: VmPhase }>): Record<string, Record<WireStatus, number>> {
  const out: Record<string, Record<WireStatus, number>> = {};
  for (const g of groups) out[g.name] = { Running: 0, Paused: 0, Suspended: 0, Stopped: 0 };
  for (const vm of vms) {
    const c = out[vm.record.hostGroup];
    if (c && vm.phase !== "deleting") c[wireStatus(vm.phase)] += 1;
  }
  return out;
}
