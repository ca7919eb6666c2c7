// github-repo: a KAMI tool in JavaScript that calls the GitHub REST API.
//
// The tool has no sockets and no token. It asks the daemon to fetch through the
// kami:tool/http interface; the daemon checks the operator's network grants and, for
// requests to api.github.com only, adds the Authorization header built from the
// GITHUB_TOKEN secret the operator stored. Neither the header nor the token ever reaches
// this code: the daemon also redacts the token from anything the API sends back.
import { log } from 'kami:tool/host@0.1.0';
import { fetch } from 'kami:tool/http@0.1.0';

const DEFAULT_API = 'https://api.github.com';
const REPO = /^[A-Za-z0-9-]{1,39}\/[A-Za-z0-9._-]{1,100}$/;

// componentize-js turns a thrown value with a `payload` into run's err(payload); a plain
// Error would trap instead (see examples/hello).
class ToolError extends Error {
  constructor(message) {
    super(message);
    this.payload = message;
  }
}

function parse(input) {
  let args;
  try {
    args = JSON.parse(input);
  } catch (e) {
    throw new ToolError(`input is not valid JSON (${e.message}); send {"repo": "owner/name"}`);
  }
  if (args === null || typeof args !== 'object' || typeof args.repo !== 'string') {
    throw new ToolError('missing "repo": give owner/name, e.g. {"repo": "bytecodealliance/wasmtime"}');
  }
  if (!REPO.test(args.repo)) {
    throw new ToolError(`"repo" must look like owner/name (got ${JSON.stringify(args.repo)})`);
  }
  const api = args.api === undefined ? DEFAULT_API : args.api;
  if (typeof api !== 'string' || !/^https?:\/\/[^/]+(\/.*)?$/.test(api)) {
    throw new ToolError('"api" must be an http(s) base URL like https://api.github.com');
  }
  return { repo: args.repo, api: api.replace(/\/+$/, '') };
}

// A failed host call throws; the WIT error variant is its payload: {tag, val}.
function get(url) {
  try {
    return fetch({
      method: 'GET',
      url,
      headers: [
        ['Accept', 'application/vnd.github+json'],
        ['X-GitHub-Api-Version', '2022-11-28'],
      ],
      body: undefined,
      timeoutMs: 8000,
    });
  } catch (e) {
    const error = e && e.payload !== undefined ? e.payload : e;
    if (error && typeof error.tag === 'string') {
      throw new ToolError(`${error.tag}: ${error.val}`);
    }
    throw new ToolError(`fetch failed: ${String(error)}`);
  }
}

export const tool = {
  run(input) {
    const { repo, api } = parse(input);
    const response = get(`${api}/repos/${repo}`);
    const text = new TextDecoder().decode(response.body);
    if (response.status === 404) {
      throw new ToolError(`no repository ${repo} (or it is private and no token is set)`);
    }
    if (response.status !== 200) {
      throw new ToolError(`the API answered ${response.status}: ${text.slice(0, 300)}`);
    }
    const data = JSON.parse(text);
    log('info', `looked up ${repo}: ${response.status}`);
    return JSON.stringify({
      repo: data.full_name,
      description: data.description,
      stars: data.stargazers_count,
      forks: data.forks_count,
      open_issues: data.open_issues_count,
      language: data.language,
      license: data.license ? data.license.spdx_id : null,
      url: data.html_url,
    });
  },
};
