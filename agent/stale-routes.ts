/**
 * After a move, the VM's direct routes to the hosts of its old segment (and to its
 * old gateway) point where it no longer is: they are the "entry for its old host"
 * the paper deletes by hand. Everything in the HID table that leads somewhere other
 * than the new gateway is such an entry; neighbours on the new segment announce
 * themselves again within a HELLO period. The AD table is set to the new AD.
 */
import type { RouteBackend } from '../shared/route-backend.js';

export interface StaleCleanup {
  removed: string[];
  adFixed: boolean;
}

export async function removeStaleRoutes(routes: RouteBackend, facts: { hid: string; newGateway: string; newAd: string; oldAd?: string }): Promise<StaleCleanup> {
  const removed: string[] = [];
  const own = facts.hid.toLowerCase();
  const gateway = facts.newGateway.toLowerCase();
  for (const route of await routes.listRoutes('HID')) {
    const xid = route.xid.toLowerCase();
    if (xid === '-' || xid === own || xid === gateway || route.port < 0) continue;
    if (route.nextHop.toLowerCase() === gateway) continue;
    if (await routes.removeRoute('HID', route.xid)) removed.push(route.xid);
  }
  let adFixed = false;
  const ads = await routes.listRoutes('AD');
  const local = -2;
  if (facts.oldAd && facts.oldAd.toLowerCase() !== facts.newAd.toLowerCase()) {
    const old = ads.find((r) => r.xid.toLowerCase() === facts.oldAd!.toLowerCase() && r.port === local);
    if (old && (await routes.removeRoute('AD', old.xid))) adFixed = true;
  }
  if (!ads.some((r) => r.xid.toLowerCase() === facts.newAd.toLowerCase() && r.port === local)) {
    await routes.setRoute('AD', facts.newAd, local, '', 0);
    adFixed = true;
  }
  return { removed, adFixed };
}
