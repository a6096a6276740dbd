'use strict';
// Prints the file the installed `ferrovia` loaded its native module from, so the test can
// tell a prebuilt platform package from a module compiled during the install.
//
//   node native-origin.cjs   (run inside the project that installed ferrovia)

const { createRequire } = require('node:module');
const path = require('node:path');

const projectRequire = createRequire(path.join(process.cwd(), 'package.json'));
const ferrovia = projectRequire('ferrovia');
if (typeof ferrovia.Server !== 'function') throw new Error('ferrovia has no Server export');
const natives = Object.keys(require.cache).filter((f) => f.endsWith('.node'));
if (natives.length !== 1) throw new Error(`expected one native module, loaded: ${natives.join(', ') || 'none'}`);
process.stdout.write(`${natives[0]}\n`);
