/**
 * The source QEMU's side of a disk migration, over QMP: an NBD client node for the
 * destination's export (reached through the tunnel's local socket), and a mirror job
 * from the VM's disk into it — `blockdev-mirror sync=full`, the way QEMU 9.1+ migrates
 * storage now that `blk` is gone.
 *
 * Zero regions are not sent as data: the mirror asks the source for block status and
 * writes holes and zero clusters to the target as NBD WRITE_ZEROES (no payload), the
 * target node turns any buffer of zeroes it is given to write into the same
 * (detect-zeroes), and the destination's export keeps them sparse.
 *
 * Once the mirror is `ready` (the target has caught up), `activate()` switches it to
 * write-blocking: from then on a guest write completes only once it is on the target
 * too, so there is nothing left to copy when the VM stops. At the switchover the VM is
 * stopped (QEMU's pause-before-switchover) and `complete()` ends the job with
 * `block-job-cancel` on a ready job, which in QEMU means: finish copying, leave the
 * target a point-in-time copy, and keep the source VM on its own disk — not
 * `job-complete`, which would pivot the source onto the NBD node: if the migration then
 * failed (the destination dying during the device state), the source would resume on a
 * disk that is across a dead tunnel. Either way the job is dismissed and the node
 * removed: the source is left as it was before.
 */
import { XmigError, errorMessage } from '../shared/errors.js';
import { QmpError, type QmpClient, type QmpEvent } from './qmp-client.js';
import type { BlockDisk } from './block-devices.js';

/** Where the source QEMU's NBD client connects: the tunnel's socket, or the destination's export over TCP. */
export type NbdServer = { type: 'unix'; path: string } | { type: 'inet'; host: string; port: number };

export interface MirrorProgress {
  /** What the job has copied, of what it has to (`len`: the allocated regions, growing as the guest writes). */
  offset: number;
  len: number;
  ready: boolean;
  /** Write-blocking and nothing left dirty. */
  activelySynced: boolean;
}

interface BlockJobInfo {
  device: string;
  len: number;
  offset: number;
  ready?: boolean;
  status?: string;
  'actively-synced'?: boolean;
  error?: string;
}

interface JobInfo {
  id: string;
  status: string;
  error?: string;
}

const ENDED = new Set(['concluded', 'null']);

export class DiskMirror {
  readonly jobId: string;
  readonly nodeName: string;
  private attached = false;
  private started = false;
  private status = 'none';
  private error: string | undefined;
  private readonly waiters = new Set<() => void>();
  private readonly failureListeners = new Set<(reason: string) => void>();
  private completing = false;
  private aborting = false;
  private failureReported = false;
  private off: (() => void) | undefined;

  constructor(
    private readonly qmp: QmpClient,
    readonly disk: BlockDisk,
    tag: string,
  ) {
    this.jobId = `xmig-mirror-${tag}`;
    this.nodeName = `xmig-nbd-${tag}`;
  }

  private onEvent(event: QmpEvent): void {
    const data = event.data ?? {};
    if (event.event === 'JOB_STATUS_CHANGE' && data['id'] === this.jobId) {
      this.status = String(data['status']);
    } else if ((event.event === 'BLOCK_JOB_COMPLETED' || event.event === 'BLOCK_JOB_CANCELLED') && data['device'] === this.jobId) {
      if (typeof data['error'] === 'string') this.error ??= data['error'];
      else if (event.event === 'BLOCK_JOB_CANCELLED' && !this.aborting) this.error ??= 'the mirror job was cancelled';
      this.status = 'concluded';
    } else return;
    for (const wake of this.waiters) wake();
    if (ENDED.has(this.status) && this.error !== undefined && !this.aborting && !this.completing && !this.failureReported) {
      this.failureReported = true;
      for (const listener of this.failureListeners) listener(`the disk mirror failed: ${this.error}`);
    }
  }

  /** The job ended with an error (or was cancelled by someone else) before we ended it. */
  onFailure(listener: (reason: string) => void): void {
    this.failureListeners.add(listener);
  }

  /** Adds the NBD client node; QEMU connects (through the tunnel) and negotiates at once, so a bad export fails here. */
  async attach(server: NbdServer, exportName: string): Promise<void> {
    try {
      // detect-zeroes: a buffer of zeroes the mirror reads (allocated zeroes, not a hole) still
      // goes as a zero write, not as data; unmap lets the destination leave it a hole.
      await this.qmp.execute('blockdev-add', {
        driver: 'nbd',
        'node-name': this.nodeName,
        server: server.type === 'unix' ? server : { type: 'inet', host: server.host, port: String(server.port) },
        export: exportName,
        discard: 'unmap',
        'detect-zeroes': 'unmap',
      });
    } catch (error) {
      throw new XmigError('ERR_MIGRATION', `the source QEMU cannot open the destination's disk ${server.type === 'unix' ? 'through the tunnel' : `at ${server.host}:${server.port}`}: ${errorMessage(error)}`, { cause: error });
    }
    this.attached = true;
  }

  /** Starts the mirror (at most `speed` bytes/s, if given). */
  async start(speed?: number): Promise<void> {
    this.off = this.qmp.onEvent((e) => this.onEvent(e));
    await this.qmp.execute('blockdev-mirror', {
      'job-id': this.jobId,
      device: this.disk.node,
      target: this.nodeName,
      sync: 'full',
      // We dismiss it ourselves, after reading how it ended.
      'auto-dismiss': false,
      ...(speed ? { speed: Math.round(speed) } : {}),
    });
    this.started = true;
    this.status = this.status === 'none' ? 'created' : this.status;
  }

  /** Resolves when the mirror is ready; rejects if it ends first, or `signal` aborts. */
  async ready(signal?: AbortSignal): Promise<void> {
    await this.until(() => this.status === 'ready' || this.status === 'standby' || ENDED.has(this.status), signal);
    if (ENDED.has(this.status)) throw new XmigError('ERR_MIGRATION', `the disk mirror failed: ${this.error ?? (await this.jobError()) ?? 'it ended before it was ready'}`);
  }

  private until(condition: () => boolean, signal?: AbortSignal): Promise<void> {
    if (condition()) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const check = (): void => {
        if (signal?.aborted) {
          cleanup();
          reject(signal.reason instanceof Error ? signal.reason : new XmigError('ERR_MIGRATION', String(signal.reason ?? 'aborted')));
        } else if (condition()) {
          cleanup();
          resolve();
        }
      };
      const cleanup = (): void => {
        this.waiters.delete(check);
        signal?.removeEventListener('abort', check);
      };
      this.waiters.add(check);
      signal?.addEventListener('abort', check);
      check();
    });
  }

  private async jobError(): Promise<string | undefined> {
    const jobs = await this.qmp.execute<JobInfo[]>('query-jobs').catch(() => []);
    return jobs.find((j) => j.id === this.jobId)?.error;
  }

  /**
   * Write-blocking from now on (QEMU 8.2+: block-job-change). Returns false where QEMU
   * cannot; the mirror then goes on in the background and the switchover copies what
   * the guest dirtied meanwhile.
   */
  async activate(): Promise<boolean> {
    try {
      await this.qmp.execute('block-job-change', { id: this.jobId, type: 'mirror', 'copy-mode': 'write-blocking' });
      return true;
    } catch (error) {
      if (error instanceof QmpError && error.qmpClass === 'CommandNotFound') return false;
      throw error;
    }
  }

  async progress(): Promise<MirrorProgress | undefined> {
    const jobs = await this.qmp.execute<BlockJobInfo[]>('query-block-jobs');
    const job = jobs.find((j) => j.device === this.jobId);
    return job ? { offset: job.offset, len: job.len, ready: job.ready === true, activelySynced: job['actively-synced'] === true } : undefined;
  }

  /** With the VM stopped: the last writes copied, the job ended without a pivot, dismissed, the node gone. */
  async complete(): Promise<MirrorProgress | undefined> {
    this.completing = true;
    const last = await this.progress();
    await this.qmp.execute('block-job-cancel', { device: this.jobId });
    await this.until(() => ENDED.has(this.status));
    const error = this.error ?? (await this.jobError());
    await this.dismiss();
    if (error) throw new XmigError('ERR_MIGRATION', `the disk mirror did not complete: ${error}`);
    return last;
  }

  /** Cancels the job (whatever it has copied is abandoned), dismisses it and removes the node: the source is as it was. */
  async abort(): Promise<void> {
    this.aborting = true;
    if (this.started && !ENDED.has(this.status)) {
      await this.qmp.execute('block-job-cancel', { device: this.jobId, force: true }).catch(() => undefined);
      const deadline = new AbortController();
      const timer = setTimeout(() => deadline.abort(new XmigError('ERR_TIMEOUT', 'the mirror job did not end within 30 s of its cancel')), 30_000);
      await this.until(() => ENDED.has(this.status), deadline.signal).catch(() => undefined);
      clearTimeout(timer);
    }
    await this.dismiss();
  }

  private async dismiss(): Promise<void> {
    if (this.started) await this.qmp.execute('job-dismiss', { id: this.jobId }).catch(() => undefined);
    this.started = false;
    this.off?.();
    this.off = undefined;
    if (this.attached) await this.qmp.execute('blockdev-del', { 'node-name': this.nodeName }).catch(() => undefined);
    this.attached = false;
  }
}
