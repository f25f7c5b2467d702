#!/usr/bin/env node
// Native-solc look-alike on top of the solc-js npm package (node_modules/solc).
//
// Only binaries from PyPI/npm can be installed here, so py-solc-x / ape-solidity
// (and forge, slither) are pointed at scripts/solc/bin/solc-v<version>, which
// execs this file. Supported, as native solc does them:
//   --version                         "solc, the solidity compiler ..." + "Version: X+commit.H.Linux.g++"
//   --standard-json [FILE|-]          JSON input from FILE or stdin, JSON output on stdout, exit 0
//   --base-path P, --include-path P (repeatable), --allow-paths A,B
//                                     used by the import callback (sources not given in the input)
// Anything else (e.g. --combined-json) exits 1 with "unrecognised option '<flag>'",
// the message py-solc-x maps to UnknownOption.
'use strict';

const fs = require('fs');
const path = require('path');

const REPO = path.resolve(__dirname, '..', '..');
// Emscripten's uncaughtException hooks are noise for a CLI; solc.js removes them too.
const solc = require(path.join(REPO, 'node_modules', 'solc'));
process.removeAllListeners('uncaughtException');

function fail(msg, code = 1) {
  process.stderr.write(msg + '\n');
  process.exit(code);
}

// ---- argument parsing (accepts "--opt value" and "--opt=value") ----
const opts = { includePaths: [], allowPaths: [], positional: [] };
const withValue = new Set(['--base-path', '--include-path', '--allow-paths']);
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  let arg = argv[i];
  let val;
  if (arg.startsWith('--') && arg.includes('=')) {
    val = arg.slice(arg.indexOf('=') + 1);
    arg = arg.slice(0, arg.indexOf('='));
  }
  if (withValue.has(arg) && val === undefined) {
    if (i + 1 >= argv.length) fail(`option '${arg}' requires an argument`);
    val = argv[++i];
  }
  switch (arg) {
    case '--version': opts.version = true; break;
    case '--standard-json': opts.standardJson = true; break;
    case '--base-path': opts.basePath = val; break;
    case '--include-path': opts.includePaths.push(val); break;
    case '--allow-paths': opts.allowPaths.push(...val.split(',').filter(Boolean)); break;
    case '--pretty-json': case '--json-indent': break; // formatting only; ignored
    default:
      if (arg.startsWith('-') && arg !== '-') fail(`unrecognised option '${arg}'`);
      opts.positional.push(arg); // input file, '-' or a remapping (ignored in standard-json mode)
  }
}

if (opts.version) {
  // e.g. 0.8.30+commit.73712a01.Emscripten.clang -> ...Linux.g++ (py-solc-x regex needs "+commit.")
  const v = solc.version().replace(/\.Emscripten\.clang$/, '.Linux.g++');
  process.stdout.write(`solc, the solidity compiler commandline interface\nVersion: ${v}\n`);
  process.exit(0);
}
if (!opts.standardJson) fail("only --version and --standard-json are supported by this solc-js adapter");

// ---- import callback: native solc's lookup order (base path, then include paths; absolute as is) ----
const cwd = process.cwd();
const basePath = path.resolve(cwd, opts.basePath || '.');
const includePaths = opts.includePaths.map((p) => path.resolve(cwd, p));
const allowed = [basePath, ...includePaths, ...opts.allowPaths.map((p) => path.resolve(cwd, p))];
const inside = (file, dir) => file === dir || file.startsWith(dir.endsWith(path.sep) ? dir : dir + path.sep);

function findImports(sourceUnitName) {
  const candidates = path.isAbsolute(sourceUnitName)
    ? [sourceUnitName]
    : [basePath, ...includePaths].map((dir) => path.resolve(dir, sourceUnitName));
  for (const file of candidates) {
    let real;
    try { real = fs.realpathSync(file); } catch (_) { continue; }
    if (!allowed.some((dir) => inside(file, dir) || inside(real, dir))) {
      return { error: `File outside of allowed directories: ${file}` };
    }
    if (fs.statSync(real).isFile()) return { contents: fs.readFileSync(real, 'utf8') };
  }
  return { error: 'File not found. Searched the following locations: ' + candidates.join(', ') };
}

// ---- standard JSON ----
const inputFile = opts.positional.find((p) => p === '-' || p.endsWith('.json')) || '-';
const input = fs.readFileSync(inputFile === '-' ? 0 : inputFile, 'utf8');
const output = solc.compile(input, { import: findImports });
// Let node flush stdout itself (process.exit() could truncate large piped output).
process.stdout.write(output + '\n');
process.exitCode = 0;
