import { describe, expect, it } from 'vitest';
import { SignatureError } from './errors.js';
import { Identity } from './identity.js';
import { openMoveAck, openMoveNotice, peekMoveNotice, sealMoveAck, sealMoveNotice, type MoveNotice } from './move-notice.js';
import { XidType } from './xid.js';

const vm = Identity.generate();
const notice: MoveNotice = {
  hid: vm.xid(XidType.HID),
  newAd: Identity.generate().xid(XidType.AD),
  newRouterHid: Identity.generate().xid(XidType.HID),
  newLinkId: 'aa/1',
  oldAd: Identity.generate().xid(XidType.AD),
  oldRouterHid: Identity.generate().xid(XidType.HID),
  oldLinkId: 'bb/0',
  seq: 42,
  timestamp: 1_700_000_000_000,
};

describe('HID-move notice', () => {
  it('round-trips and proves the HID', () => {
    const sealed = sealMoveNotice(notice, vm);
    const { notice: opened } = openMoveNotice(sealed);
    expect(opened).toEqual(notice);
    expect(peekMoveNotice(sealed)).toEqual(notice);
  });

  it('rejects a notice for a HID the signer does not own', () => {
    const thief = Identity.generate();
    const reason = (() => {
      try {
        openMoveNotice(sealMoveNotice(notice, thief));
      } catch (error) {
        return (error as SignatureError).reason;
      }
      return 'accepted';
    })();
    expect(reason).toBe('key-mismatch');
  });

  it('acks are signed by the router that sends them', () => {
    const router = Identity.generate();
    const ack = { hid: notice.hid, seq: 42, routerHid: router.xid(XidType.HID) };
    expect(openMoveAck(sealMoveAck(ack, router))).toEqual(ack);
    expect(() => openMoveAck(sealMoveAck({ ...ack, routerHid: notice.newRouterHid }, router))).toThrow(SignatureError);
  });
});
