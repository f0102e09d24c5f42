/**
 * How the agent and the router plugin change route tables: xia-core's operations
 * (set4 / remove / list) behind one small interface. ControlPortRoutes speaks the
 * Click control port (an `xmig node` or a real xia-core router); xianet's
 * LocalRoutes changes an in-process node's tables directly.
 */
import { ControlClient, ControlError, parseControlTarget, RouteControl, type ListedRoute, type RouteType } from './click-control-client.js';

export type { ListedRoute, RouteType };

export interface RouteBackend {
  /** Installs or replaces a route ("-" is the default route). */
  setRoute(type: RouteType, xid: string, port: number, nextHop?: string, flags?: number): Promise<void>;
  /** Removes a route; false if there was none. */
  removeRoute(type: RouteType, xid: string): Promise<boolean>;
  listRoutes(type: RouteType): Promise<ListedRoute[]>;
  close(): Promise<void>;
}

export class ControlPortRoutes implements RouteBackend {
  private readonly client: ControlClient;
  private readonly control: RouteControl;

  /** `target` is "host:port" or a Unix socket path; `router` the Click router name (the node's name). */
  constructor(target: string, router: string, timeoutMs?: number) {
    this.client = new ControlClient(parseControlTarget(target), timeoutMs);
    this.control = new RouteControl(this.client, router);
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

  close(): Promise<void> {
    return this.client.close();
  }
}
