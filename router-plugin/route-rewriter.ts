/**
 * Where a moved HID's route points on this router, and writing it: the new gateway
 * routes the HID to the VM's link; any other router points it toward the new location
 * (by AD, or by router HID within one AD). Rewrites are set4s of the whole route, so
 * repeating one is harmless and a later move (A → B → A) simply overwrites the path of
 * the earlier one.
 */
import type { MoveNotice } from '../shared/move-notice.js';
import type { ListedRoute, RouteBackend } from '../shared/route-backend.js';
import { XidType, type Xid } from '../shared/xid.js';

export type Role = 'new-gateway' | 'transit' | 'old-gateway' | 'same-gateway';

/** What a notice makes of this router's route for the HID. */
export interface Placement {
  role: Role;
  port: number;
  nextHop: string;
}

export class RouteRewriter {
  constructor(
    private readonly routes: RouteBackend,
    private readonly self: { hid: Xid; ad: Xid | undefined },
  ) {}

  /** This router's port named by a beacon link id ("<hid prefix>/<port>"), if the link id is ours. */
  portOf(linkId: string): number | undefined {
    const [prefix, port] = linkId.split('/');
    if (!prefix || port === undefined || !this.self.hid.id.toString('hex').startsWith(prefix)) return undefined;
    const n = Number(port);
    return Number.isInteger(n) && n >= 0 ? n : undefined;
  }

  async routeTo(xid: Xid): Promise<ListedRoute | undefined> {
    const type = xid.type === XidType.AD ? 'AD' : 'HID';
    const text = xid.toString().toLowerCase();
    return (await this.routes.listRoutes(type)).find((r) => r.xid.toLowerCase() === text && r.port >= 0);
  }

  /** Where the HID goes here; undefined when this router has no route toward the new location. */
  async place(notice: MoveNotice, arrivalPort: number): Promise<Placement | undefined> {
    const isNew = notice.newRouterHid.equals(this.self.hid);
    const isOld = notice.oldRouterHid.equals(this.self.hid);
    if (isNew) {
      return { role: isOld ? 'same-gateway' : 'new-gateway', port: this.portOf(notice.newLinkId) ?? arrivalPort, nextHop: notice.hid.toString() };
    }
    const sameAd = this.self.ad !== undefined && notice.newAd.equals(this.self.ad);
    const toward = sameAd ? await this.routeTo(notice.newRouterHid) : await this.routeTo(notice.newAd);
    if (!toward) return undefined;
    return { role: isOld ? 'old-gateway' : 'transit', port: toward.port, nextHop: toward.nextHop };
  }

  /** The next router toward the VM's old location (for forwarding the notice), if there is one. */
  async towardOld(notice: MoveNotice): Promise<ListedRoute | undefined> {
    const sameAd = this.self.ad !== undefined && notice.oldAd.equals(this.self.ad);
    const toward = sameAd ? await this.routeTo(notice.oldRouterHid) : await this.routeTo(notice.oldAd);
    return toward?.nextHop ? toward : undefined;
  }

  write(hid: Xid, placement: Placement): Promise<void> {
    return this.routes.setRoute('HID', hid.toString(), placement.port, placement.nextHop, 0);
  }

  /** Removes the route of a HID this router no longer keeps state for. */
  remove(hid: string): Promise<boolean> {
    return this.routes.removeRoute('HID', hid);
  }
}
