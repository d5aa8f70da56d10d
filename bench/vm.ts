/**
 * Runs a bench row inside a qemu guest, for rows that need more open files than this machine lets
 * one process have. The idle row at 100,000 connections is one: each connection is a descriptor in
 * the gateway and another in the load generator, and a container's hard limit (20,000 here, with
 * CAP_SYS_RESOURCE dropped, so even root cannot raise it) stops the ramp long before. A guest has
 * its own kernel, so its root raises the limit; it boots the host's root filesystem read-only over
 * 9p, so the same node binary, the same build and the same bench code run there, with a tmpfs
 * for scratch (TMPDIR), and it hands its result back through a second, writable 9p share.
 *
 * What a guest measures: RSS per connection, connections held, bytes to watchers: memory and
 * counts, which do not depend on how fast the guest's CPU is. Times measured inside a software-
 * emulated guest (qemu's TCG) are not comparable with the host's and are not used for verdicts.
 *
 * Host needs: qemu-system-x86_64, a Debian kernel (/boot/vmlinuz-* and its /lib/modules tree),
 * a static busybox (see VM_PACKAGES). No image is built or downloaded: the initramfs written per
 * run holds busybox, the 9p/virtio modules and an init script, nothing else.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { findExecutable } from '../src/node-host/commands.js';

export const VM_PACKAGES = 'qemu-system-x86 linux-image-amd64 busybox-static';

export type VmAccel = 'tcg' | 'kvm';

export interface VmOptions {
  /** tcg (software emulation, works anywhere) or kvm (hardware; a nested guest may hang at boot). */
  accel: VmAccel;
  vcpus: number;
  memoryMiB: number;
  /** Longest the guest may run, boot included. */
  timeoutS: number;
  log: (msg: string) => void;
}

export interface VmEnvironment {
  kind: 'qemu';
  accel: VmAccel;
  vcpus: number;
  memoryMiB: number;
  kernel: string;
  /** The guest's open-file limit for the row's processes. */
  openFileLimit: number;
  /** The host's limit that made the guest necessary. */
  hostOpenFileLimit: number | null;
  /** Spawn of qemu → the guest's init reached the row's command. */
  bootMs: number;
}

/** The guest raises both limits this high (the kernel's default fs.nr_open). */
const GUEST_OPEN_FILES = 1_048_576;
// The serial console carries the firmware's escape sequences and CRs: lines keep printable text.
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point
const TERMINAL_CONTROL = /\x1b\[[0-9;?]*[A-Za-z]|\x1bc|[\x00-\x08\x0b-\x1f]/g;
const BOOT_MARK = 'clawgate-vm: init ready';
const RC_MARK = 'clawgate-vm: rc=';

interface Kernel {
  version: string;
  image: string;
  modules: string[];
}

/** The newest installed kernel with the modules a 9p root needs, in load order. */
function findKernel(): Kernel {
  const images = existsSync('/boot') ? readdirSync('/boot').filter((f) => f.startsWith('vmlinuz-')) : [];
  if (images.length === 0) throw new Error(`no kernel in /boot: install ${VM_PACKAGES}`);
  const version = images
    .map((f) => f.slice('vmlinuz-'.length))
    .sort((a, b) => a.localeCompare(b, 'en', { numeric: true }))
    .at(-1) as string;
  const modules: string[] = [];
  for (const m of ['virtio_pci', '9pnet_virtio', '9p']) {
    // modprobe prints the module and its dependencies, dependencies first, as "insmod <path>".
    const r = spawnSync('modprobe', ['-S', version, '--show-depends', m], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`modprobe cannot resolve ${m} for kernel ${version}: ${r.stderr.trim() || r.error?.message}`);
    for (const line of r.stdout.split('\n')) {
      const path = /^insmod (\S+)/.exec(line.trim())?.[1];
      if (path && !modules.includes(path)) modules.push(path);
    }
  }
  return { version, image: `/boot/vmlinuz-${version}`, modules };
}

/** The executable `cmd` on PATH (plus the sbin directories a non-login root shell may lack). */
function which(cmd: string): string | null {
  return findExecutable(cmd, `${process.env.PATH ?? ''}:/usr/sbin:/sbin`);
}

/** What is missing on this machine to boot a guest, or null when nothing is. */
export function vmUnavailable(): string | null {
  const missing: string[] = [];
  if (!which('qemu-system-x86_64')) missing.push('qemu-system-x86_64');
  const busybox = which('busybox');
  // ldd fails on a static binary; a dynamic busybox cannot run in the guest's empty initramfs.
  if (!busybox || spawnSync('ldd', [busybox]).status === 0) missing.push('a static busybox');
  if (!existsSync('/boot') || !readdirSync('/boot').some((f) => f.startsWith('vmlinuz-'))) missing.push('a kernel in /boot');
  return missing.length ? `missing ${missing.join(', ')}: apt-get install ${VM_PACKAGES}` : null;
}

// ------------------------------------------------------------------------------------------
// initramfs (cpio "newc", which the kernel unpacks without a compressor)
// ------------------------------------------------------------------------------------------

export interface CpioEntry {
  name: string;
  /** Full st_mode: type bits and permissions. */
  mode: number;
  data?: Buffer;
  /** Device numbers of a character device. */
  rdev?: [number, number];
}

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFCHR = 0o020000;

function pad4(n: number): number {
  return (4 - (n % 4)) % 4;
}

/** Serialises entries as a newc archive (the format of Linux's initramfs). */
export function cpioNewc(entries: CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  const hex = (n: number) => n.toString(16).padStart(8, '0');
  let ino = 1;
  for (const e of [...entries, { name: 'TRAILER!!!', mode: 0 }]) {
    const data = e.data ?? Buffer.alloc(0);
    const name = Buffer.from(`${e.name}\0`, 'utf8');
    const header =
      '070701' +
      hex(e.name === 'TRAILER!!!' ? 0 : ino++) +
      hex(e.mode) +
      hex(0) + // uid
      hex(0) + // gid
      hex((e.mode & S_IFDIR) === S_IFDIR ? 2 : 1) +
      hex(0) + // mtime
      hex(data.length) +
      hex(0) + // dev major
      hex(0) + // dev minor
      hex(e.rdev?.[0] ?? 0) +
      hex(e.rdev?.[1] ?? 0) +
      hex(name.length) +
      hex(0); // check
    parts.push(Buffer.from(header, 'ascii'), name, Buffer.alloc(pad4(110 + name.length)), data, Buffer.alloc(pad4(data.length)));
  }
  return Buffer.concat(parts);
}

/**
 * Where the guest writes: a tmpfs on /dev/shm (inside the guest's own devtmpfs), its TMPDIR and
 * HOME. Not /tmp: a tmpfs there would hide the host's /tmp, where a checkout may live (CI clones
 * into one).
 */
const GUEST_SCRATCH = '/dev/shm';
/** The writable share, as the guest sees it. */
export const GUEST_SHARED_DIR = `${GUEST_SCRATCH}/vmout`;

/** The guest's /init: modules, the host's root read-only, a tmpfs for scratch, the raised limit, the command. */
function initScript(command: string): string {
  return `#!/bin/busybox sh
B=/bin/busybox
$B mount -t proc proc /proc
$B mount -t sysfs sys /sys
$B mount -t devtmpfs dev /dev
for m in /mods/*.ko; do $B insmod "$m" || echo "clawgate-vm: insmod $m failed"; done
$B mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000 hostroot /newroot || echo "clawgate-vm: root mount failed"
$B mount -t proc proc /newroot/proc
$B mount -t sysfs sys /newroot/sys
$B mount -t devtmpfs dev /newroot/dev
$B mkdir -p /newroot${GUEST_SCRATCH}
$B mount -t tmpfs -o mode=1777 scratch /newroot${GUEST_SCRATCH}
$B mkdir -p /newroot${GUEST_SHARED_DIR}
$B mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 vmout /newroot${GUEST_SHARED_DIR} || echo "clawgate-vm: out mount failed"
$B ip link set lo up
echo ${GUEST_OPEN_FILES} > /proc/sys/fs/nr_open
ulimit -n ${GUEST_OPEN_FILES}
echo "${BOOT_MARK}"
$B chroot /newroot /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=${GUEST_SCRATCH} TMPDIR=${GUEST_SCRATCH} /bin/sh -c ${shellQuote(command)}
echo "${RC_MARK}$?"
$B sync
$B poweroff -f
`;
}

/** One word for sh, whatever it holds. */
export function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

function initramfs(kernel: Kernel, command: string): Buffer {
  const busybox = which('busybox');
  if (!busybox) throw new Error(`no busybox: apt-get install ${VM_PACKAGES}`);
  const dirs = ['bin', 'mods', 'proc', 'sys', 'dev', 'newroot'];
  const entries: CpioEntry[] = dirs.map((name) => ({ name, mode: S_IFDIR | 0o755 }));
  entries.push({ name: 'dev/console', mode: S_IFCHR | 0o600, rdev: [5, 1] });
  entries.push({ name: 'bin/busybox', mode: S_IFREG | 0o755, data: readFileSync(busybox) });
  kernel.modules.forEach((path, i) => {
    entries.push({ name: `mods/${String(i).padStart(2, '0')}-${basename(path)}`, mode: S_IFREG | 0o644, data: readFileSync(path) });
  });
  entries.push({ name: 'init', mode: S_IFREG | 0o755, data: Buffer.from(initScript(command)) });
  return cpioNewc(entries);
}

// ------------------------------------------------------------------------------------------
// Boot and run
// ------------------------------------------------------------------------------------------

export interface VmRun {
  /** Exit code of the command in the guest (null: it never finished). */
  rc: number | null;
  environment: VmEnvironment;
  /** The writable share: files the command left there. */
  outDir: string;
  cleanup: () => void;
}

/**
 * Boots a guest that runs `command` (a shell command line, run from the host's root filesystem
 * as root with the raised limit) and powers off. `prepare` writes input files into the shared
 * directory, which the guest sees as GUEST_SHARED_DIR.
 */
export async function runInVm(command: string, opts: VmOptions, prepare?: (outDir: string) => void): Promise<VmRun> {
  const unavailable = vmUnavailable();
  if (unavailable) throw new Error(`cannot boot a guest: ${unavailable}`);
  const kernel = findKernel();
  const work = mkdtempSync(join(tmpdir(), 'clawgate-vm-'));
  const outDir = join(work, 'out');
  mkdirSync(outDir);
  prepare?.(outDir);
  const initrd = join(work, 'initramfs.cpio');
  writeFileSync(initrd, initramfs(kernel, command));
  const args = [
    ...(opts.accel === 'kvm' ? ['-accel', 'kvm', '-cpu', 'host,-arch-capabilities'] : ['-accel', 'tcg,thread=multi', '-cpu', 'max']),
    '-smp',
    String(opts.vcpus),
    '-m',
    `${opts.memoryMiB}M`,
    '-nographic',
    '-no-reboot',
    '-nic',
    'none',
    '-kernel',
    kernel.image,
    '-initrd',
    initrd,
    '-append',
    'console=ttyS0 quiet panic=-1',
    '-virtfs',
    'local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap',
    '-virtfs',
    `local,path=${outDir},mount_tag=vmout,security_model=none`,
  ];
  const t0 = performance.now();
  let bootMs: number | null = null;
  let rc: number | null = null;
  const child = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let pending = '';
  // The last lines before the guest reached its command: what to show when it never does.
  const bootLines: string[] = [];
  const onText = (chunk: Buffer) => {
    pending += chunk.toString('utf8');
    let nl = pending.indexOf('\n');
    while (nl >= 0) {
      const line = pending.slice(0, nl).replace(TERMINAL_CONTROL, '').trim();
      pending = pending.slice(nl + 1);
      nl = pending.indexOf('\n');
      // The firmware leaves its last line open, so the mark can end a line rather than fill it.
      if (line.endsWith(BOOT_MARK)) bootMs = Math.round(performance.now() - t0);
      else if (line.startsWith(RC_MARK)) rc = Number(line.slice(RC_MARK.length));
      else if (line && bootMs !== null) {
        if (!/^\[\s*\d+\.\d+\]/.test(line)) opts.log(`vm: ${line}`);
      } else if (line) {
        bootLines.push(line);
        if (bootLines.length > 12) bootLines.shift();
      }
    }
  };
  child.stdout.on('data', onText);
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => {
    stderr += c.toString('utf8');
  });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutS * 1000);
  const code = await exited;
  clearTimeout(timer);
  if (bootMs === null) {
    rmSync(work, { recursive: true, force: true });
    throw new Error(
      `the guest never reached its command (qemu exit ${code}${stderr.trim() ? `: ${stderr.trim().slice(0, 300)}` : ''}; last console lines: ${bootLines.join(' | ') || 'none'})` +
        (opts.accel === 'kvm' ? '; a nested KVM guest can hang at boot: try --vm-accel tcg' : ''),
    );
  }
  return {
    rc,
    environment: {
      kind: 'qemu',
      accel: opts.accel,
      vcpus: opts.vcpus,
      memoryMiB: opts.memoryMiB,
      kernel: kernel.version,
      openFileLimit: GUEST_OPEN_FILES,
      hostOpenFileLimit: null,
      bootMs,
    },
    outDir,
    cleanup: () => rmSync(work, { recursive: true, force: true }),
  };
}
