/**
 * How the agent and the router plugin change route tables: xia-core's operations
 * (set4 / remove / list) behind one small interface. ControlPortRoutes speaks the
 * Click control port (an `xmig node` or a real xia-core router); xianet's
 * LocalRoutes changes an in-process node's tables directly. Both behave as an
 * xia-core table does: removing "-" (the default route) leaves it at port -1.
 */
import { ControlClient, ControlError, RouteControl, type ControlClientOptions, type ListedRoute, type RouteType } from './click-control-client.js';
import { XmigError } from './errors.js';
import { Xid } from './xid.js';

export type { ListedRoute, RouteType };

export interface RouteBackend {
  /** Installs or replaces a route ("-" is the default route). */
  setRoute(type: RouteType, xid: string, port: number, nextHop?: string, flags?: number): Promise<void>;
  /** Removes a route; false if there was none. */
  removeRoute(type: RouteType, xid: string): Promise<boolean>;
  listRoutes(type: RouteType): Promise<ListedRoute[]>;
  /** The router's own HID or AD, as its tables say (the entry on port -2), or as configured. */
  ownXid?(type: 'HID' | 'AD'): Promise<string | undefined>;
  close(): Promise<void>;
}

export interface ControlPortRoutesOptions extends ControlClientOptions {
  /** The router's HID and AD, where its tables cannot say (several local entries). */
  hid?: string;
  ad?: string;
}

export class ControlPortRoutes implements RouteBackend {
  readonly client: ControlClient;
  private readonly control: RouteControl;
  private readonly configured: Partial<Record<'HID' | 'AD', string>>;

  /** `target` is "host:port" or a Unix socket path; `router` the Click router name (the node's name). */
  constructor(target: string, router: string, options: ControlPortRoutesOptions = {}) {
    const { hid, ad, ...client } = options;
    this.client = new ControlClient(target, client);
    this.control = new RouteControl(this.client, router);
    this.configured = {};
    for (const [type, text] of [['HID', hid], ['AD', ad]] as const) {
      if (text === undefined) continue;
      let xid: Xid;
      try {
        xid = Xid.parse(text);
      } catch (error) {
        throw new XmigError('ERR_CONFIG', `the router's ${type} "${text}": ${(error as Error).message}`);
      }
      if (xid.typeName !== type) throw new XmigError('ERR_CONFIG', `the router's ${type} "${text}" is not an ${type}`);
      this.configured[type] = xid.toString();
    }
  }

  setRoute(type: RouteType, xid: string, port: number, nextHop = '', flags = 0): Promise<void> {
    return this.control.setRoute(xid, port, nextHop, flags, type);
  }

  async removeRoute(type: RouteType, xid: string): Promise<boolean> {
    try {
      await this.control.removeRoute(xid, type);
      return true;
    } catch (error) {
      if (error instanceof ControlError && /nonexistent XID/.test(error.message)) return false;
      throw error;
    }
  }

  listRoutes(type: RouteType): Promise<ListedRoute[]> {
    return this.control.listRoutes(type);
  }

  async ownXid(type: 'HID' | 'AD'): Promise<string | undefined> {
    return this.configured[type] ?? this.control.ownXid(type);
  }

  close(): Promise<void> {
    return this.client.stop();
  }
}
