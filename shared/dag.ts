/**
 * DAG addresses. A DAG is a list of XID nodes in topological order, the sink (the
 * final intent) last, each with up to four out-edges in priority order (the first
 * is the intent, later ones are fallbacks), plus the edges of the implicit entry
 * (source) node. It is immutable; builders return new DAGs.
 *
 * Text forms are xia-core's (api/dagaddr/cpp/dagaddr.cpp): route expressions
 * `RE ( AD:… HID:… ) SID:…` and the multi-line `DAG 2 0 - \n AD:… 2 1 - \n …` form.
 */
import { AddressError } from './errors.js';
import { Xid, XidType } from './xid.js';

/** xia-core api/include/xia.h EDGES_MAX and NODES_MAX. */
export const DAG_MAX_EDGES = 4;
export const DAG_MAX_NODES = 20;

function invalid(message: string): AddressError {
  return new AddressError('ERR_DAG_INVALID', message);
}

function parseError(message: string): AddressError {
  return new AddressError('ERR_DAG_PARSE', message);
}

/** A node of a DAG as plain data: its XID and the indices of its out-edges. */
export interface DagNodeSpec {
  xid: Xid;
  edges: readonly number[];
}

export class Dag {
  /** Nodes in topological order; the last one is the sink (final intent). */
  readonly nodes: readonly Xid[];
  /** Out-edges of each node, in priority order; the sink's list is empty. */
  readonly edges: ReadonlyArray<readonly number[]>;
  /** Out-edges of the entry (source) node, in priority order. */
  readonly entry: readonly number[];
  private reText: string | null | undefined;

  private constructor(nodes: readonly Xid[], edges: ReadonlyArray<readonly number[]>, entry: readonly number[]) {
    this.nodes = nodes;
    this.edges = edges;
    this.entry = entry;
  }

  /**
   * Builds a DAG from nodes, per-node edges and entry edges, checking XIA's rules:
   * 1..20 nodes, at most 4 edges per node, edges to existing nodes, no self-loops or
   * repeated edges, acyclic, every node reachable from the entry, exactly one sink.
   * Nodes not in topological order are reordered (stably), so the sink ends up last.
   */
  static create(nodes: readonly Xid[], edges: ReadonlyArray<readonly number[]>, entry: readonly number[]): Dag {
    const n = nodes.length;
    if (n === 0) throw invalid('a DAG needs at least one node');
    if (n > DAG_MAX_NODES) throw invalid(`a DAG has at most ${DAG_MAX_NODES} nodes, this one has ${n}`);
    if (edges.length !== n) throw invalid(`edge lists (${edges.length}) do not match nodes (${n})`);
    const checkEdges = (from: string, list: readonly number[]): void => {
      if (list.length > DAG_MAX_EDGES) {
        throw invalid(`${from} has ${list.length} out-edges; XIA allows at most ${DAG_MAX_EDGES}`);
      }
      const seen = new Set<number>();
      for (const to of list) {
        if (!Number.isInteger(to) || to < 0 || to >= n) {
          throw invalid(`${from} has an edge to node ${to}, but the DAG has nodes 0..${n - 1}`);
        }
        if (seen.has(to)) throw invalid(`${from} has two edges to node ${to} (${nodes[to]!.short})`);
        seen.add(to);
      }
    };
    if (entry.length === 0) throw invalid('the entry node has no out-edges');
    checkEdges('the entry node', entry);
    edges.forEach((list, i) => {
      checkEdges(`node ${i} (${nodes[i]!.short})`, list);
      if (list.includes(i)) throw invalid(`node ${i} (${nodes[i]!.short}) has an edge to itself`);
    });
    for (let i = 0; i < n; i++) {
      for (let j = i + 1; j < n; j++) {
        if (nodes[i]!.equals(nodes[j]!)) throw invalid(`XID ${nodes[i]} appears twice (nodes ${i} and ${j})`);
      }
    }

    const sinks = edges.flatMap((list, i) => (list.length === 0 ? [i] : []));
    if (sinks.length !== 1) {
      throw invalid(
        sinks.length === 0
          ? 'the DAG has no sink (every node has out-edges, so it has a cycle)'
          : `the DAG has ${sinks.length} sinks (nodes ${sinks.join(', ')}); exactly one final intent is allowed`,
      );
    }

    // Kahn's algorithm, taking the lowest index first so an already ordered DAG is unchanged.
    const indegree = new Array<number>(n).fill(0);
    for (const list of edges) for (const to of list) indegree[to]!++;
    const order: number[] = [];
    const ready = indegree.flatMap((d, i) => (d === 0 ? [i] : []));
    while (ready.length > 0) {
      ready.sort((a, b) => a - b);
      const i = ready.shift()!;
      order.push(i);
      for (const to of edges[i]!) if (--indegree[to]! === 0) ready.push(to);
    }
    if (order.length !== n) throw invalid('the DAG has a cycle');

    const reachable = new Set<number>();
    const stack = [...entry];
    while (stack.length > 0) {
      const i = stack.pop()!;
      if (reachable.has(i)) continue;
      reachable.add(i);
      stack.push(...edges[i]!);
    }
    if (reachable.size !== n) {
      const lost = nodes.flatMap((x, i) => (reachable.has(i) ? [] : [`${i} (${x.short})`]));
      throw invalid(`node(s) ${lost.join(', ')} cannot be reached from the entry node`);
    }

    const position = new Array<number>(n);
    order.forEach((oldIndex, newIndex) => (position[oldIndex] = newIndex));
    return new Dag(
      Object.freeze(order.map((i) => nodes[i]!)),
      Object.freeze(order.map((i) => Object.freeze(edges[i]!.map((to) => position[to]!)))),
      Object.freeze(entry.map((to) => position[to]!)),
    );
  }

  /** A chain entry → x0 → x1 → … → xn (xia-core's `n_src * x0 * x1 …`). */
  static chain(...xids: Xid[]): Dag {
    return Dag.create(
      xids,
      xids.map((_, i) => (i + 1 < xids.length ? [i + 1] : [])),
      [0],
    );
  }

  /**
   * The usual address of a host or service: AD → HID (→ SID), with a fallback edge
   * from the entry straight to the HID. A router that has no route to the AD (for
   * instance because the host has moved to another AD) still tries the HID.
   */
  static hostAddress(ad: Xid, hid: Xid, sid?: Xid): Dag {
    const nodes = sid ? [ad, hid, sid] : [ad, hid];
    const edges = sid ? [[1], [2], []] : [[1], []];
    return Dag.create(nodes, edges, [0, 1]);
  }

  /** Parses either text form; the keyword (`RE` or `DAG`) decides which. */
  static parse(text: string): Dag {
    const trimmed = text.trim();
    if (/^RE(\s|$)/.test(trimmed)) return Dag.parseRe(trimmed);
    if (/^DAG(\s|$)/.test(trimmed)) return Dag.parseDagForm(trimmed);
    throw parseError(`"${abbreviate(trimmed)}" is neither an "RE ..." nor a "DAG ..." address`);
  }

  /**
   * Parses a route expression: XIDs form the intent chain; `( X Y )` before an intent
   * node is a fallback path from the previous intent node to it.
   */
  static parseRe(text: string): Dag {
    const tokens = text.trim().split(/\s+/);
    if (tokens[0] !== 'RE') throw parseError(`route expression must start with "RE": "${abbreviate(text)}"`);
    const nodes: Xid[] = [];
    const edges: number[][] = [];
    const entry: number[] = [];
    const SOURCE = -1;
    const addNode = (xid: Xid): number => {
      const existing = nodes.findIndex((x) => x.equals(xid));
      if (existing >= 0) return existing;
      nodes.push(xid);
      edges.push([]);
      return nodes.length - 1;
    };
    const addEdge = (from: number, to: number): void => {
      const list = from === SOURCE ? entry : edges[from]!;
      if (from !== to && !list.includes(to)) list.push(to);
    };

    let lastIntent = SOURCE;
    let inFallback = false;
    let fallback: number[] = [];
    let pendingFallback: number[] | undefined;
    for (let t = 1; t < tokens.length; t++) {
      const token = tokens[t]!;
      if (token === '(') {
        if (inFallback) throw parseError(`nested "(" at token ${t} of "${abbreviate(text)}"`);
        if (pendingFallback) throw parseError(`two fallback paths in a row at token ${t} of "${abbreviate(text)}"`);
        inFallback = true;
        fallback = [];
      } else if (token === ')') {
        if (!inFallback) throw parseError(`")" without "(" at token ${t} of "${abbreviate(text)}"`);
        if (fallback.length === 0) throw parseError(`empty fallback "( )" at token ${t} of "${abbreviate(text)}"`);
        inFallback = false;
        pendingFallback = fallback;
      } else {
        let xid: Xid;
        try {
          xid = Xid.parse(token);
        } catch (error) {
          throw parseError(`token ${t} of route expression: ${(error as Error).message}`);
        }
        const index = addNode(xid);
        if (inFallback) {
          if (fallback.length > 0) addEdge(fallback[fallback.length - 1]!, index);
          fallback.push(index);
        } else {
          addEdge(lastIntent, index);
          if (pendingFallback) {
            addEdge(lastIntent, pendingFallback[0]!);
            addEdge(pendingFallback[pendingFallback.length - 1]!, index);
            pendingFallback = undefined;
          }
          lastIntent = index;
        }
      }
    }
    if (inFallback) throw parseError(`unclosed "(" in "${abbreviate(text)}"`);
    if (pendingFallback) throw parseError(`fallback path at the end of "${abbreviate(text)}" leads to no intent node`);
    if (nodes.length === 0) throw parseError('route expression has no XIDs');
    return Dag.create(nodes, edges, entry);
  }

  /**
   * Parses the multi-line form: the first line is `DAG` and the entry's edges, then
   * one line per node `TYPE:hex e0 e1 …`, lines separated by ` - `; the last node is
   * the sink and has no edges. Edge indices count nodes from 0, the entry being -1.
   */
  static parseDagForm(text: string): Dag {
    const lines = text
      .replace(/\r?\n/g, ' ')
      .split(/\s-(?=\s|$)/)
      .map((line) => line.trim());
    if (lines[lines.length - 1] === '') lines.pop();
    const head = lines[0]!.split(/\s+/);
    if (head[0] !== 'DAG') throw parseError(`DAG form must start with "DAG": "${abbreviate(text)}"`);
    if (lines.length < 2) throw parseError(`DAG form has no nodes: "${abbreviate(text)}"`);
    const parseEdges = (fields: string[], where: string): number[] =>
      fields.map((field) => {
        if (!/^\d+$/.test(field)) throw parseError(`${where}: edge "${field}" is not a node index`);
        return Number(field);
      });
    const entry = parseEdges(head.slice(1), 'entry line');
    const nodes: Xid[] = [];
    const edges: number[][] = [];
    lines.slice(1).forEach((line, i) => {
      const fields = line.split(/\s+/);
      let xid: Xid;
      try {
        xid = Xid.parse(fields[0]!);
      } catch (error) {
        throw parseError(`DAG form line ${i + 2}: ${(error as Error).message}`);
      }
      nodes.push(xid);
      edges.push(parseEdges(fields.slice(1), `DAG form line ${i + 2}`));
    });
    const sink = nodes.length - 1;
    if (edges[sink]!.length > 0) {
      throw invalid(`the last node of a DAG form (${nodes[sink]!.short}) is the sink and must have no edges`);
    }
    return Dag.create(nodes, edges, entry);
  }

  /** The sink node: the final intent (the service, host or content addressed). */
  get sink(): Xid {
    return this.nodes[this.nodes.length - 1]!;
  }

  get length(): number {
    return this.nodes.length;
  }

  /** Out-edges of node `index`, -1 being the entry. */
  edgesOf(index: number): readonly number[] {
    return index < 0 ? this.entry : this.edges[index]!;
  }

  indexOf(xid: Xid): number {
    return this.nodes.findIndex((x) => x.equals(xid));
  }

  /** The first node of the given principal type, if any. */
  find(type: number): Xid | undefined {
    return this.nodes.find((x) => x.type === type);
  }

  /** All nodes of the given type. */
  findAll(type: number): Xid[] {
    return this.nodes.filter((x) => x.type === type);
  }

  /** The same DAG with node `index` replaced by `xid` (edges unchanged). */
  withNode(index: number, xid: Xid): Dag {
    if (index < 0 || index >= this.nodes.length) throw invalid(`node ${index} is not in a ${this.nodes.length}-node DAG`);
    const nodes = this.nodes.slice();
    nodes[index] = xid;
    return Dag.create(nodes, this.edges, this.entry);
  }

  /**
   * The same DAG with its AD replaced: what a migration to another AD does to an
   * address. Every AD node equal to `from` (or every AD node, when `from` is not
   * given) becomes `to`. A DAG without an AD is returned unchanged.
   */
  withAd(to: Xid, from?: Xid): Dag {
    if (to.type !== XidType.AD) throw invalid(`withAd needs an AD, got ${to}`);
    let changed = false;
    const nodes = this.nodes.map((x) => {
      if (x.type === XidType.AD && (from === undefined || x.equals(from)) && !x.equals(to)) {
        changed = true;
        return to;
      }
      return x;
    });
    return changed ? Dag.create(nodes, this.edges, this.entry) : this;
  }

  /** Appends `xid` as a new sink after the current one (e.g. a SID after a host DAG). */
  append(xid: Xid): Dag {
    const nodes = [...this.nodes, xid];
    const edges = [...this.edges.slice(0, -1), [this.nodes.length], []];
    return Dag.create(nodes, edges, this.entry);
  }

  /** Same nodes in the same order with the same edges. */
  equals(other: Dag): boolean {
    if (this === other) return true;
    if (this.nodes.length !== other.nodes.length) return false;
    if (!sameList(this.entry, other.entry)) return false;
    for (let i = 0; i < this.nodes.length; i++) {
      if (!this.nodes[i]!.equals(other.nodes[i]!)) return false;
      if (!sameList(this.edges[i]!, other.edges[i]!)) return false;
    }
    return true;
  }

  /** xia-core's multi-line DAG form (dag_string()). */
  toDagString(): string {
    const lines = [`DAG${this.entry.map((e) => ` ${e}`).join('')} - `];
    for (let i = 0; i < this.nodes.length - 1; i++) {
      lines.push(`${this.nodes[i]}${this.edges[i]!.map((e) => ` ${e}`).join('')} - `);
    }
    lines.push(this.sink.toString());
    return lines.join('\n');
  }

  /** The route-expression form, or undefined if this DAG's shape has none. */
  toRe(): string | undefined {
    if (this.reText === undefined) this.reText = this.buildRe() ?? null;
    return this.reText ?? undefined;
  }

  private buildRe(): string | undefined {
    const parts = ['RE'];
    let current = -1;
    const used = new Set<number>();
    const take = (i: number): boolean => {
      if (used.has(i)) return false;
      used.add(i);
      return true;
    };
    while (current !== this.nodes.length - 1) {
      const out = this.edgesOf(current);
      if (out.length === 0 || out.length > 2) return undefined;
      const intent = out[0]!;
      if (out.length === 2) {
        const path: number[] = [];
        let f = out[1]!;
        while (f !== intent) {
          if (!take(f)) return undefined;
          path.push(f);
          const next = this.edges[f]!;
          if (next.length !== 1) return undefined;
          f = next[0]!;
        }
        if (path.length === 0) return undefined;
        parts.push('(', ...path.map((i) => this.nodes[i]!.toString()), ')');
      }
      if (!take(intent)) return undefined;
      parts.push(this.nodes[intent]!.toString());
      current = intent;
    }
    if (used.size !== this.nodes.length) return undefined;
    const text = parts.join(' ');
    // The reading must give back this very DAG (node order included), or the form is not faithful.
    try {
      return Dag.parseRe(text).equals(this) ? text : undefined;
    } catch {
      return undefined;
    }
  }

  /** RE form when the shape has one, else the DAG form on one line; for logs and messages. */
  toString(): string {
    return this.toRe() ?? this.toDagString().replace(/\n/g, '');
  }

  toJSON(): { entry: number[]; nodes: Array<{ xid: string; edges: number[] }> } {
    return {
      entry: [...this.entry],
      nodes: this.nodes.map((xid, i) => ({ xid: xid.toString(), edges: [...this.edges[i]!] })),
    };
  }
}

function sameList(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

function abbreviate(text: string): string {
  return text.length > 120 ? `${text.slice(0, 117)}...` : text;
}
