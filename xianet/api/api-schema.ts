/**
 * The application API's requests, one schema per operation, checked at the boundary
 * before anything of the node sees them. XIDs and DAGs arrive in their wire forms
 * (`{"$xid": "SID:…"}`, `{"$dag": "DAG …"}`, see api-json.ts) and leave as objects;
 * numbers are bounded; anything else is answered with ERR_BAD_REQUEST naming the field.
 */
import { z } from '../../shared/config.js';
import { Dag } from '../../shared/dag.js';
import { errorMessage } from '../../shared/errors.js';
import { Xid, XidType } from '../../shared/xid.js';
import type { NodeEventName } from './node-api.js';

/** The longest DAG text taken (20 nodes of 45 characters and their edges fit many times over). */
const MAX_DAG_TEXT = 8192;
const MAX_XID_TEXT = 64;
/** Most CIDs or chunk sizes in one request. */
const MAX_LIST = 65_536;
const DAY_MS = 86_400_000;

export const EVENTS: readonly NodeEventName[] = ['beacon', 'gateway', 'registered', 'beacon-rejected', 'beacon-stray'];

function xidOf(type: number, name: string) {
  return z
    .object({ $xid: z.string().max(MAX_XID_TEXT) }, { error: `expected ${name} ({"$xid": "${name}:<40 hex>"})` })
    .transform((value, ctx) => {
      try {
        const xid = Xid.parse(value.$xid);
        if (xid.type === type) return xid;
        ctx.addIssue({ code: 'custom', message: `expected ${name}, got ${xid.typeName}` });
      } catch (error) {
        ctx.addIssue({ code: 'custom', message: errorMessage(error) });
      }
      return z.NEVER;
    });
}

const sid = xidOf(XidType.SID, 'SID');
const cid = xidOf(XidType.CID, 'CID');

const dag = z
  .object({ $dag: z.string().max(MAX_DAG_TEXT) }, { error: 'expected a DAG ({"$dag": "RE ..." or "DAG ..."})' })
  .transform((value, ctx) => {
    try {
      return Dag.parse(value.$dag);
    } catch (error) {
      ctx.addIssue({ code: 'custom', message: errorMessage(error) });
      return z.NEVER;
    }
  });

const ms = (max: number) => z.number().int().min(1).max(max);
const requestId = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);

/** One schema per operation (the `op` and `id` fields are checked before these). */
export const requestSchemas = {
  info: z.object({}),
  subscribe: z.object({ event: z.enum(EVENTS as [NodeEventName, ...NodeEventName[]]) }),
  solicit: z.object({}),
  announce: z.object({}),
  ping: z.object({
    dst: dag,
    count: z.number().int().min(0).max(10_000_000).optional(),
    /** Fractions of a millisecond are fine; less than 1 ms is not (xping's floor). */
    intervalMs: z.number().min(1).max(DAY_MS).optional(),
    timeoutMs: ms(DAY_MS).optional(),
    /** Echo data bytes; the node also checks it against what its smallest link carries. */
    size: z.number().int().min(0).max(65_535).optional(),
  }),
  cancel: z.object({ pingId: requestId }),
  bind: z.object({ sid: sid.optional() }),
  send: z.object({ sid, dst: dag, port: z.number().int().min(0).max(4096).optional() }),
  unbind: z.object({ sid }),
  listen: z.object({ sid: sid.optional() }),
  unlisten: z.object({ sid }),
  connect: z.object({
    dst: dag,
    pinPeerAddress: z.boolean().optional(),
    outageTimeoutMs: ms(DAY_MS).optional(),
    connectTimeoutMs: ms(DAY_MS).optional(),
  }),
  'connect-cancel': z.object({ connectId: requestId }),
  'chunk-put': z.object({ sizes: z.array(z.number().int().min(0).max(2 ** 32)).max(MAX_LIST), noStore: z.boolean().optional() }),
  'chunk-drop': z.object({ cids: z.array(cid).max(MAX_LIST) }),
  'chunk-get': z.object({ cid, source: dag, length: z.number().int().min(0).max(2 ** 32).optional(), timeoutMs: ms(DAY_MS).optional() }),
  'chunk-cancel': z.object({ getId: requestId }),
} as const;

export type ApiOp = keyof typeof requestSchemas;
export type ApiRequest = { [K in ApiOp]: { op: K; id: number | undefined } & z.output<(typeof requestSchemas)[K]> }[ApiOp];

export interface ApiErrorBody {
  code: 'ERR_BAD_REQUEST';
  message: string;
  /** The offending field ("" for the request as a whole). */
  field: string;
}

export type ParsedRequest = { ok: true; request: ApiRequest } | { ok: false; id: number | undefined; error: ApiErrorBody };

function isOp(op: unknown): op is ApiOp {
  return typeof op === 'string' && Object.prototype.hasOwnProperty.call(requestSchemas, op);
}

/**
 * Checks a request header. The `id` is read first: without a valid one nobody can be
 * answered, and the caller counts the request as refused instead.
 */
export function parseRequest(header: Record<string, unknown>): ParsedRequest {
  const idResult = requestId.optional().safeParse(header['id']);
  const id = idResult.success ? idResult.data : undefined;
  const bad = (field: string, message: string): ParsedRequest => ({ ok: false, id, error: { code: 'ERR_BAD_REQUEST', message, field } });
  if (!idResult.success) return bad('id', 'field "id": expected an integer request id');
  const op = header['op'];
  if (!isOp(op)) return bad('op', `unknown API operation "${typeof op === 'string' ? op.slice(0, 40) : typeof op}"`);
  const parsed = requestSchemas[op].safeParse(header);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    // A wire XID or DAG is named by its field, not by the "$xid"/"$dag" key inside it.
    const path = issue.path.map(String);
    if (path.length > 1 && (path.at(-1) === '$xid' || path.at(-1) === '$dag')) path.pop();
    const field = path.join('.');
    return bad(field, `${op}: ${field ? `field "${field}": ` : ''}${issue.message}`);
  }
  return { ok: true, request: { ...parsed.data, op, id } as ApiRequest };
}
