/** A host named by its HID, its DAG or its name: the HID its STREAMs come from (for `--from`). */
import { XmigError } from '../shared/errors.js';
import { Xid, XidType } from '../shared/xid.js';
import type { NodeApi } from '../xianet/api/node-api.js';
import { resolveTarget } from '../xianet/names/resolve-target.js';

export async function hostHid(text: string, api: NodeApi): Promise<Xid> {
  if (/^HID:/i.test(text)) return Xid.parse(text);
  const hid = (await resolveTarget(text, api)).find(XidType.HID);
  if (!hid) throw new XmigError('ERR_CONFIG', `--from ${text}: its DAG has no HID`);
  return hid;
}
