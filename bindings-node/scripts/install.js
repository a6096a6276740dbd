'use strict';
// Install step of the npm package: keep a prebuilt native module when one matches this
// platform, otherwise build it from the Rust sources shipped in the package.
//
//   FERROVIA_BUILD_FROM_SOURCE=1  always build from source
//   FERROVIA_CARGO_PROFILE=dev    build without optimisations (faster, for development)

const { spawnSync } = require('node:child_process');
const { copyFileSync, existsSync, readFileSync, writeFileSync } = require('node:fs');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..', '..');

function triple() {
  const { platform, arch } = process;
  if (platform !== 'linux') return platform === 'win32' ? `win32-${arch}-msvc` : `${platform}-${arch}`;
  const header = process.report && process.report.getReport().header;
  return `linux-${arch}-${header && header.glibcVersionRuntime ? 'gnu' : 'musl'}`;
}

function hasPrebuilt(t) {
  if (existsSync(path.join(ROOT, 'bindings-node', `ferrovia.${t}.node`))) return true;
  try {
    require.resolve(`ferrovia-${t}`, { paths: [ROOT] });
    return true;
  } catch {
    return false;
  }
}

/**
 * A packed package carries only the crates the Node module needs; drop the other
 * workspace members from the installed copy's Cargo.toml so cargo can load it.
 */
function trimWorkspace() {
  const manifest = path.join(ROOT, 'Cargo.toml');
  const text = readFileSync(manifest, 'utf8');
  const trimmed = text.replace(/members\s*=\s*\[([^\]]*)\]/, (whole, list) => {
    const kept = list
      .split(',')
      .map((m) => m.trim())
      .filter((m) => m && existsSync(path.join(ROOT, JSON.parse(m), 'Cargo.toml')));
    return `members = [${kept.join(', ')}]`;
  });
  if (trimmed !== text) writeFileSync(manifest, trimmed);
}

function build(t) {
  const cargo = process.env.CARGO || 'cargo';
  const probe = spawnSync(cargo, ['--version'], { encoding: 'utf8' });
  if (probe.error || probe.status !== 0) {
    console.error(
      `ferrovia: no prebuilt native module for ${t} (the package ferrovia-${t} is not ` +
        'installed), and cargo was not found to build one from source.\n' +
        'Prebuilt modules exist for linux-x64-gnu (glibc 2.17+), linux-x64-musl and ' +
        'linux-arm64-gnu; on those, install without --omit=optional (or --no-optional).\n' +
        'Elsewhere, install Rust (https://rustup.rs) and run `npm rebuild ferrovia`.',
    );
    process.exit(1);
  }
  trimWorkspace();
  const profile = process.env.FERROVIA_CARGO_PROFILE === 'dev' ? 'dev' : 'release';
  const manifest = path.join(ROOT, 'Cargo.toml');
  console.error(`ferrovia: building the native module for ${t} from source (cargo, ${profile})...`);
  const args = ['build', '--manifest-path', manifest, '-p', 'ferrovia-node', '--profile', profile];
  const r = spawnSync(cargo, args, { stdio: 'inherit', cwd: ROOT });
  if (r.status !== 0) {
    console.error('ferrovia: cargo build failed; see the output above.');
    process.exit(r.status || 1);
  }
  const targetDir = process.env.CARGO_TARGET_DIR || path.join(ROOT, 'target');
  const dir = path.join(targetDir, profile === 'dev' ? 'debug' : 'release');
  const lib = process.platform === 'win32' ? 'ferrovia_node.dll' : process.platform === 'darwin' ? 'libferrovia_node.dylib' : 'libferrovia_node.so';
  copyFileSync(path.join(dir, lib), path.join(ROOT, 'bindings-node', `ferrovia.${t}.node`));
}

const t = triple();
if (process.env.FERROVIA_BUILD_FROM_SOURCE === '1' || !hasPrebuilt(t)) build(t);
