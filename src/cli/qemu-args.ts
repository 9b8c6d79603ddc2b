// Rewriting a QEMU command line so that every bridge NIC uses a descriptor from tapgate.
//
// `-nic bridge,br=B,...` and `-netdev bridge,id=X,br=B,...` would make QEMU run a bridge
// helper; they become `-netdev tap,id=X,fd=N` (plus a `-device` line for -nic), so QEMU never
// opens /dev/net/tun or runs a helper itself.

export interface NicRequest {
  /** Index into the argument list of the option's value, or -1 for a NIC the launcher adds. */
  argumentIndex: number;
  form: 'nic' | 'netdev' | 'added';
  network: string;
  id: string;
  model: string;
  mac: string | undefined;
  queues: number;
  /** Sub-options of the original option that the rewrite keeps. */
  extra: string[];
}

/** Splits a QEMU option value at commas; `,,` is QEMU's escape for a literal comma. */
export function splitOptions(value: string): string[] {
  const parts: string[] = [];
  let current = '';
  for (let index = 0; index < value.length; index++) {
    if (value[index] === ',' && value[index + 1] === ',') {
      current += ',';
      index++;
    } else if (value[index] === ',') {
      parts.push(current);
      current = '';
    } else {
      current += value[index];
    }
  }
  parts.push(current);
  return parts;
}

function parseKeyValues(parts: string[]): Map<string, string> {
  const map = new Map<string, string>();
  for (const part of parts) {
    const equals = part.indexOf('=');
    map.set(equals < 0 ? part : part.slice(0, equals), equals < 0 ? '' : part.slice(equals + 1));
  }
  return map;
}

const NIC_KEYS = new Set(['br', 'model', 'mac', 'id', 'helper']);
const NETDEV_KEYS = new Set(['br', 'id', 'helper']);

/**
 * Finds the bridge NICs in a QEMU command line.
 * @throws RangeError naming the option when it has sub-options the rewrite cannot keep.
 */
export function findBridgeNics(args: readonly string[], defaults: { model: string; queues: number }): NicRequest[] {
  const nics: NicRequest[] = [];
  for (let index = 0; index + 1 < args.length; index++) {
    const option = args[index].replace(/^--/, '-');
    if (option !== '-nic' && option !== '-netdev') continue;
    const parts = splitOptions(args[index + 1]);
    if (parts[0] !== 'bridge') continue;
    const values = parseKeyValues(parts.slice(1));
    const allowed = option === '-nic' ? NIC_KEYS : NETDEV_KEYS;
    for (const key of values.keys()) {
      if (!allowed.has(key)) throw new RangeError(`${option} ${args[index + 1]}: sub-option "${key}" is not supported by tapgate run; supported: ${[...allowed].join(', ')}`);
    }
    const id = values.get('id') ?? `tapgate${nics.length}`;
    nics.push({
      argumentIndex: index + 1,
      form: option === '-nic' ? 'nic' : 'netdev',
      network: values.get('br') ?? 'br0',
      id,
      model: values.get('model') ?? defaults.model,
      mac: values.get('mac')?.toLowerCase(),
      queues: defaults.queues,
      extra: [],
    });
  }
  return nics;
}

/** Returns the virtio-net MSI-X vector count QEMU's documentation gives for N queue pairs: 2N+2. */
function vectors(queues: number): number {
  return 2 * queues + 2;
}

/** Builds the `-netdev` and `-device` values for one NIC whose queue fds are `fds` in the child. */
export function tapOptions(nic: NicRequest, childFds: number[], mac: string): { netdev: string; device: string | undefined } {
  const fdOption = childFds.length === 1 ? `fd=${childFds[0]}` : `fds=${childFds.join(':')}`;
  // Values came unescaped out of splitOptions; escaping them again keeps a `,,` in the user's
  // option from turning into a new sub-option such as script=.
  const netdev = joinOptions(['tap', `id=${nic.id}`, fdOption]);
  if (nic.form === 'netdev') return { netdev, device: undefined };
  const multiqueue = childFds.length > 1 ? ['mq=on', `vectors=${vectors(childFds.length)}`] : [];
  return { netdev, device: joinOptions([nic.model, `netdev=${nic.id}`, `mac=${mac}`, ...multiqueue]) };
}

/** Joins sub-options back into one QEMU option value, escaping commas as `,,`. */
export function joinOptions(parts: readonly string[]): string {
  return parts.map((part) => part.replaceAll(',', ',,')).join(',');
}

/**
 * Completes a user's `-device` line for a rewritten `-netdev bridge`: it gets the guest MAC the
 * daemon recorded unless it names one, and the multi-queue options when there are several fds.
 */
function completeDevice(value: string, childFds: number[], mac: string): string {
  const parts = splitOptions(value);
  const keys = new Set(parts.slice(1).map((part) => part.split('=', 1)[0]));
  if (!keys.has('mac')) parts.push(`mac=${mac}`);
  if (childFds.length > 1 && !keys.has('mq')) parts.push('mq=on');
  if (childFds.length > 1 && !keys.has('vectors')) parts.push(`vectors=${vectors(childFds.length)}`);
  return joinOptions(parts);
}

function deviceNetdev(value: string): string | undefined {
  return splitOptions(value).slice(1).find((part) => part.startsWith('netdev='))?.slice('netdev='.length);
}

export interface PlannedNic {
  nic: NicRequest;
  childFds: number[];
  mac: string;
}

/**
 * Returns the rewritten argument list. Each bridge option is replaced in place, and a `-nic`
 * gets its `-device` right after, so the guest sees its NICs in command-line order. NICs the
 * launcher adds come last.
 */
export function rewriteArguments(args: readonly string[], nics: readonly PlannedNic[]): string[] {
  const replaced = new Map(nics.filter((planned) => planned.nic.form !== 'added').map((planned) => [planned.nic.argumentIndex, planned]));
  const netdevs = new Map(nics.filter((planned) => planned.nic.form === 'netdev').map((planned) => [planned.nic.id, planned]));
  const result: string[] = [];
  for (let index = 0; index < args.length; index++) {
    const planned = replaced.get(index + 1);
    if (planned) {
      const { netdev, device } = tapOptions(planned.nic, planned.childFds, planned.mac);
      result.push('-netdev', netdev);
      if (device) result.push('-device', device);
      index++;
      continue;
    }
    const option = args[index].replace(/^--/, '-');
    const owner = option === '-device' && index + 1 < args.length ? netdevs.get(deviceNetdev(args[index + 1]) ?? '') : undefined;
    if (owner) {
      result.push(args[index], completeDevice(args[index + 1], owner.childFds, owner.mac));
      index++;
      continue;
    }
    result.push(args[index]);
  }
  for (const planned of nics.filter((entry) => entry.nic.form === 'added')) {
    const { netdev, device } = tapOptions(planned.nic, planned.childFds, planned.mac);
    result.push('-netdev', netdev, '-device', device!);
  }
  return result;
}
