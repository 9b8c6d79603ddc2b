// Validation of interface and network names, shared by clients, daemon and policy.

/** Linux's IFNAMSIZ (include/uapi/linux/if.h): names are at most 15 bytes plus the NUL. */
export const MAX_INTERFACE_NAME_BYTES = 15;

/**
 * Returns why `name` cannot be a Linux interface name, or undefined when it can.
 *
 * Mirrors the kernel's dev_valid_name(): 1 to 15 bytes, not `.` or `..`, no `/`, `:`, NUL or
 * whitespace. The name is checked whole and never shortened, so the bytes that a policy rule
 * matched are the bytes later sent to the kernel.
 */
export function interfaceNameProblem(name: string): string | undefined {
  const bytes = Buffer.byteLength(name, 'utf8');
  if (bytes === 0) return 'is empty';
  if (bytes > MAX_INTERFACE_NAME_BYTES) return `is too long: ${bytes} bytes, the maximum is ${MAX_INTERFACE_NAME_BYTES}`;
  if (name === '.' || name === '..') return 'is "." or ".."';
  if (/[/:\0\s]/u.test(name)) return 'contains "/", ":", a NUL byte or whitespace';
  return undefined;
}

/** Throws a RangeError naming the value when it is not a valid interface name. */
export function checkInterfaceName(name: string, what: string): void {
  const problem = interfaceNameProblem(name);
  if (problem) throw new RangeError(`Invalid ${what} name ${JSON.stringify(name)}: ${problem}`);
}
