/**
 * `Examples:` for every command's --help (and xmig(1)), kept in one table so that a
 * command file does not have to carry them and the test can check that none is missing.
 */
import type { Command } from 'commander';

const VM_DAG = "'RE AD:1000000000000000000000000000000000000001 HID:b0000000000000000000000000000000000000ff'";
const MIGRATION = "'RE AD:… HID:… SID:1110000000000000000000000000000000001115'";

export const EXAMPLES: Record<string, readonly string[]> = {
  dag: [`xmig dag ${VM_DAG} --format dag`, `xmig dag ${VM_DAG} --format json`],
  xip: ['xmig xip encode --dst DAG --src DAG --payload hi', 'xmig xip decode --pcap capture.pcapng --udp-port 7000-7010'],
  'xip encode': [`xmig xip encode --dst ${VM_DAG} --src 'RE HID:a000000000000000000000000000000000000001' --payload hi --next-header 60`],
  'xip decode': ['xmig xip decode 013b0002fa02017e…', 'xmig xip decode --pcap capture.pcapng --udp-port 7000-7010 --json'],
  node: ['xmig node --config /etc/xmig/node.json', 'xmig node --config r1.json --plugin mobility --metrics-port 9560 --log-level debug'],
  ping: [`xmig ping ${VM_DAG} -i 10 -n 100`, 'xmig ping goldbach.vm --json'],
  nameserver: ['xmig nameserver --db /var/lib/xmig/names.json --metrics-port 9563'],
  resolve: ['xmig resolve goldbach.vm', `xmig resolve --reverse ${VM_DAG}`],
  testbed: ['xmig testbed --migrate --topology inter-ad', 'xmig testbed --migrate --moves 20 --pause-ms 300 --json'],
  cal: ['xmig cal serve --name goldbach.vm', 'xmig cal ask goldbach.vm -n 1000'],
  'cal serve': ['xmig cal serve --name goldbach.vm --owner-key /var/lib/xmig/node.key'],
  'cal ask': ['xmig cal ask goldbach.vm', 'xmig cal ask goldbach.vm --pin --json'],
  agent: ['xmig agent --config /etc/xmig/agent.json', 'xmig agent --config agent.json --metrics-port 9561 --log-level debug'],
  'router-plugin': ['xmig router-plugin --control /run/xmig/control.sock --router R1 --key /var/lib/xmig/node.key --metrics-port 9562'],
  send: [
    `qemu: migrate "exec:xmig send --to ${MIGRATION}"`,
    `qemu: migrate "exec:xmig send --to ${MIGRATION} --metrics-textfile /var/lib/prometheus/node-exporter/xmig-send.prom"`,
    'xmig send --transport tcp --to 10.0.0.2:4444 < vm.state',
    `qemu: migrate "exec:xmig send --via-node --to ${MIGRATION}"`,
  ],
  recv: ['qemu-system-x86_64 … -incoming "exec:xmig recv"', 'xmig recv --from HID:… --stats recv.json > vm.state'],
  migrate: [
    `xmig migrate --qmp /run/vm.qmp --to ${MIGRATION} --report m.json`,
    'xmig migrate --qmp /run/vm.qmp --to vm-dest --timeout 60 --timeout-action switchover --auto-converge',
  ],
  'disk-target': [
    'xmig disk-target --qmp /run/vm.qmp',
    'xmig disk-target --qmp /run/vm.qmp --from A.hosts --stats disk.json',
    'xmig disk-target --qmp /run/vm.qmp --transport tcp --listen 0.0.0.0:4445 --nbd-listen 0.0.0.0:10809',
  ],
  'libvirt-proxy': ['xmig libvirt-proxy target --from hostA.xia', 'xmig libvirt-proxy source --domain web1 --to hostB.xia'],
  'libvirt-proxy source': ['xmig libvirt-proxy source --domain web1 --to hostB.xia', "xmig libvirt-proxy source --domain web1 --to 'RE AD:… HID:…' --stats /tmp/web1-proxy.json"],
  'libvirt-proxy target': ['xmig libvirt-proxy target --from hostA.xia hostC.xia', 'xmig libvirt-proxy target --from HID:… --channels libvirtd,migration --metrics-port 9564'],
  tunnel: ['xmig tunnel serve --key /var/lib/xmig/tunnel.key --name iperf.vm1 --to 127.0.0.1:5201', 'xmig tunnel connect --to iperf.vm1 --listen 127.0.0.1:5202'],
  'tunnel serve': ['xmig tunnel serve --key /var/lib/xmig/tunnel.key --name iperf.vm1 --to 127.0.0.1:5201', 'xmig tunnel serve --sid SID:… --to 127.0.0.1:22 --from hostC.xia --metrics-port 9566'],
  'tunnel connect': ['xmig tunnel connect --to iperf.vm1 --listen 127.0.0.1:5202', "xmig tunnel connect --to 'RE AD:… HID:… SID:…' --listen 127.0.0.1:2222 --outage-timeout 5m"],
  'migrate status': ['xmig migrate status', 'xmig migrate status --qmp /run/vm.qmp --json'],
  config: [
    'xmig config --role vm --name vm1',
    'xmig config --role router --topology fig1b.json --node R1 --address R1=10.0.0.1 --address R2=10.0.0.2 …',
    'xmig config --role hypervisor --out /tmp/xmig-configs',
  ],
  setup: ['xmig setup router --name R1', 'xmig setup vm --name vm1', 'xmig setup hypervisor --topology fig1b.json --node A --address …', 'xmig setup --remove vm --purge'],
  lab: ['xmig lab --topology intra-ad', 'xmig lab --moves 6 --delay-ms 20 --json > lab.json', 'xmig lab --topology inter-ad --keep'],
  'lab clean': ['xmig lab clean', 'xmig lab clean --prefix xmig-lab-1a2b3c'],
  'lab relay': ['xmig lab relay --listen /tmp/vm-control.sock --to [fe80::5054:ff:fe58:4941%brA]:7101'],
  'lab image': ['xmig lab image', 'xmig lab image --cache-dir /var/cache/xmig-lab --json'],
  man: ['xmig man | man -l -', 'xmig man > xmig.1'],
};

function pathOf(command: Command): string {
  const names: string[] = [];
  for (let c: Command | null = command; c?.parent; c = c.parent) names.unshift(c.name());
  return names.join(' ');
}

const attached = new WeakMap<Command, readonly string[]>();

/** The examples of a command (after applyExamples). */
export function examplesOf(command: Command): readonly string[] {
  return attached.get(command) ?? [];
}

/** Adds "Examples:" to the help of every command of the tree that the table names. */
export function applyExamples(program: Command): void {
  const visit = (command: Command): void => {
    const examples = EXAMPLES[pathOf(command)];
    if (examples && !attached.has(command)) {
      attached.set(command, examples);
      command.addHelpText('after', `\nExamples:\n${examples.map((e) => `  ${e}`).join('\n')}\n`);
    }
    for (const sub of command.commands) visit(sub);
  };
  visit(program);
}
