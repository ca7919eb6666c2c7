// Builds one JavaScript tool into a component with the componentize-js JS API.
//
// Usage: node componentize.mjs <source.js> <wit-dir> <world> <out.wasm>
// kamictl copies this file next to the pinned node_modules it installed, so the bare
// import below resolves there (ES modules ignore NODE_PATH).
import { spawnSync } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { componentize } from '@bytecodealliance/componentize-js';

const [sourcePath, witPath, worldName, out] = process.argv.slice(2);
if (!out) {
  console.error('usage: node componentize.mjs <source.js> <wit-dir> <world> <out.wasm>');
  process.exit(2);
}

// componentize-js only says "failed to parse JS source, encountered [1] errors"; Node's
// own parser names the line and the token, which is what an author needs.
function checkSyntax(path, source) {
  const check = spawnSync(process.execPath, ['--input-type=module', '--check'], {
    input: source,
    encoding: 'utf8',
  });
  if (check.status === 0) return;
  const lines = check.stderr.replaceAll('[stdin]', path).split('\n');
  // Keep the source excerpt and the error; drop the stack of Node's own checker.
  const last = lines.findIndex((line) => /^\w*Error\b/.test(line));
  console.error((last >= 0 ? lines.slice(0, last + 1) : lines).join('\n').trim());
  process.exit(1);
}

try {
  checkSyntax(sourcePath, await readFile(sourcePath));
  const { component } = await componentize({
    sourcePath: resolve(sourcePath),
    witPath: resolve(witPath),
    worldName,
    // Tools reach the network only through kami:tool/http, under the operator's grants;
    // wasi:http would bypass that, and the daemon does not link it.
    disableFeatures: ['http', 'fetch-event'],
  });
  await writeFile(out, component);
} catch (err) {
  console.error(`componentize-js failed: ${err && err.stack ? err.stack : err}`);
  process.exit(1);
}
