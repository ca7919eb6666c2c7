// hello: a KAMI tool in JavaScript.
//
// `kamictl build` turns this ES module into a WebAssembly component with componentize-js.
// WIT interfaces are imported by their full names; the exported `tool` interface is an
// object named after it, with one method per WIT function.
import { log } from 'kami:tool/host@0.1.0';

const MAX_NAME = 200;

// How `run` returns the `err` side of its result<string, string>: componentize-js turns a
// thrown value with a `payload` (or a thrown string) into err(payload). A plain Error
// carries no payload, so componentize-js traps on it instead, and the caller only learns
// that the tool crashed.
class ToolError extends Error {
  constructor(message) {
    super(message);
    this.name = 'ToolError';
    this.payload = message;
  }
}

function parse(input) {
  let args;
  try {
    args = JSON.parse(input);
  } catch (e) {
    throw new ToolError(`input is not valid JSON (${e.message}); send an object like {"name": "Ada"}`);
  }
  if (args === null || typeof args !== 'object' || Array.isArray(args)) {
    throw new ToolError('input must be a JSON object like {"name": "Ada"}');
  }
  const { name } = args;
  if (typeof name !== 'string' || name.trim() === '') {
    throw new ToolError('missing "name": give who to greet, e.g. {"name": "Ada"}');
  }
  if (name.length > MAX_NAME) {
    throw new ToolError(`"name" is too long (${name.length} characters; at most ${MAX_NAME})`);
  }
  return name.trim();
}

export const tool = {
  run(input) {
    const name = parse(input);
    log('info', `greeting a name of ${name.length} characters`);
    return JSON.stringify({ greeting: `Hello, ${name}!` });
  },
};
