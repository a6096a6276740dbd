'use strict';
// Finds the native module: a local build first (a checkout, or a source build done at
// install time), then the prebuilt package for this platform, else a clear error.

const { existsSync } = require('node:fs');
const path = require('node:path');

// The platforms that have a `ferrovia-<triple>` package (scripts/release.sh builds them).
const PREBUILT = ['linux-x64-gnu', 'linux-x64-musl', 'linux-arm64-gnu'];

/** The napi-rs platform name of this process, e.g. `linux-x64-gnu`. */
function platformTriple() {
  const { platform, arch } = process;
  if (platform === 'linux') {
    return `linux-${arch}-${isMusl() ? 'musl' : 'gnu'}`;
  }
  if (platform === 'win32') return `win32-${arch}-msvc`;
  return `${platform}-${arch}`;
}

function isMusl() {
  try {
    const report = process.report && process.report.getReport();
    const header = report && (typeof report === 'string' ? JSON.parse(report) : report).header;
    return !(header && header.glibcVersionRuntime);
  } catch {
    return false;
  }
}

function load() {
  const triple = platformTriple();
  const tried = [];
  const override = process.env.FERROVIA_NATIVE_PATH;
  const local = path.join(__dirname, '..', `ferrovia.${triple}.node`);
  for (const file of override ? [override] : [local]) {
    tried.push(file);
    if (existsSync(file)) return require(file);
  }
  const pkg = `ferrovia-${triple}`;
  tried.push(pkg);
  try {
    return require(pkg);
  } catch (e) {
    if (e && e.code !== 'MODULE_NOT_FOUND') throw e;
  }
  const prebuilt = PREBUILT.includes(triple)
    ? `A prebuilt module for ${triple} comes in the optional dependency ${pkg}; ` +
      'reinstall without --omit=optional (or --no-optional), or '
    : `No prebuilt module exists for ${triple} (only ${PREBUILT.join(', ')}); `;
  const err = new Error(
    `ferrovia: no native module for ${triple} (looked for ${tried.join(', ')}). ` +
      prebuilt +
      'build it from source with a Rust toolchain (https://rustup.rs): ' +
      '`npm rebuild ferrovia` (or `npm run build` in a checkout).',
  );
  err.code = 'ERR_FERROVIA_NATIVE_MISSING';
  throw err;
}

module.exports = load();
module.exports.platformTriple = platformTriple;
