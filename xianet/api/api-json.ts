/**
 * JSON forms of the API's values: XIDs and DAGs travel as their text forms and
 * come back as objects, so both sides of the socket see the NodeApi types.
 */
import { Dag } from '../../shared/dag.js';
import { MalformedPacketError } from '../../shared/errors.js';
import { Xid } from '../../shared/xid.js';
import type { NodeEventName, NodeEvents, NodeInfo } from './node-api.js';

/** Replaces Xid and Dag values (deeply) by their text forms. */
export function toWire(value: unknown): unknown {
  if (value instanceof Xid) return { $xid: value.toString() };
  if (value instanceof Dag) return { $dag: value.toDagString() };
  if (Array.isArray(value)) return value.map(toWire);
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, toWire(v)]));
  }
  return value;
}

/** The inverse of toWire; throws MalformedPacketError on a bad XID or DAG. */
export function fromWire(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(fromWire);
  if (value && typeof value === 'object') {
    const record = value as Record<string, unknown>;
    try {
      if (typeof record['$xid'] === 'string') return Xid.parse(record['$xid']);
      if (typeof record['$dag'] === 'string') return Dag.parse(record['$dag']);
    } catch (error) {
      throw new MalformedPacketError(`API value: ${(error as Error).message}`);
    }
    return Object.fromEntries(Object.entries(record).map(([k, v]) => [k, fromWire(v)]));
  }
  return value;
}

export function eventFromWire<E extends NodeEventName>(_event: E, payload: unknown): NodeEvents[E] {
  return fromWire(payload) as NodeEvents[E];
}

export function infoFromWire(payload: unknown): NodeInfo {
  return fromWire(payload) as NodeInfo;
}
