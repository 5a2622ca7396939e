/**
 * Small readers for service definitions in tests: an XML reader (elements,
 * attributes and text, enough for a launchd plist and a Task Scheduler task;
 * it refuses unclosed or mismatched tags, a stray `<` and unknown entities,
 * so a malformed file fails the test that reads it), a systemd unit-file
 * reader, and the command-line splitters of systemd and Windows.
 */

/** One element. */
export interface XmlElement {
  readonly name: string;
  readonly attributes: Record<string, string>;
  readonly children: XmlElement[];
  /** The text directly inside, entities decoded. */
  text: string;
}

const ENTITIES: Record<string, string> = { lt: "<", gt: ">", amp: "&", quot: '"', apos: "'" };

function decode(text: string): string {
  return text.replace(/&([a-z]+|#[0-9]+|#x[0-9a-fA-F]+);|&/g, (whole, name?: string) => {
    if (name === undefined) throw new SyntaxError(`bare "&" in ${JSON.stringify(text)}`);
    if (name.startsWith("#x")) return String.fromCodePoint(parseInt(name.slice(2), 16));
    if (name.startsWith("#")) return String.fromCodePoint(parseInt(name.slice(1), 10));
    if (!(name in ENTITIES)) throw new SyntaxError(`unknown entity ${whole}`);
    return ENTITIES[name];
  });
}

/** Parse `text`; returns the root element. */
export function parseXml(text: string): XmlElement {
  let rest = text.replace(/^\uFEFF/, "").replace(/^<\?xml[^?]*\?>/, "").trimStart()
    .replace(/^<!DOCTYPE[^>]*>/, "");
  const stack: XmlElement[] = [];
  let root: XmlElement | null = null;
  while (rest.length > 0) {
    const lt = rest.indexOf("<");
    const chunk = lt < 0 ? rest : rest.slice(0, lt);
    if (chunk.includes(">")) throw new SyntaxError(`stray ">" in ${JSON.stringify(chunk)}`);
    if (stack.length > 0) stack[stack.length - 1].text += decode(chunk);
    else if (chunk.trim() !== "") throw new SyntaxError(`text outside the root: ${chunk}`);
    if (lt < 0) break;
    rest = rest.slice(lt);
    if (rest.startsWith("<!--")) {
      const end = rest.indexOf("-->");
      if (end < 0) throw new SyntaxError("unclosed comment");
      rest = rest.slice(end + 3);
      continue;
    }
    const m = rest.match(/^<(\/?)([A-Za-z_][\w.-]*)((?:\s+[\w:.-]+="[^"<]*")*)\s*(\/?)>/);
    if (!m) throw new SyntaxError(`bad tag at ${JSON.stringify(rest.slice(0, 40))}`);
    rest = rest.slice(m[0].length);
    const [, closing, name, attrs, selfClosing] = m;
    if (closing) {
      const open = stack.pop();
      if (open?.name !== name) throw new SyntaxError(`</${name}> closes <${open?.name}>`);
      if (stack.length === 0) root = open;
      continue;
    }
    const attributes: Record<string, string> = {};
    for (const a of attrs.matchAll(/([\w:.-]+)="([^"]*)"/g)) attributes[a[1]] = decode(a[2]);
    const element: XmlElement = { name, attributes, children: [], text: "" };
    if (stack.length > 0) stack[stack.length - 1].children.push(element);
    else if (root !== null) throw new SyntaxError("two root elements");
    if (selfClosing) {
      if (stack.length === 0) root = element;
    } else stack.push(element);
  }
  if (stack.length > 0 || root === null) throw new SyntaxError("unclosed element");
  return root;
}

/** A property list's value, as JavaScript. */
export type PlistValue = string | number | boolean | PlistValue[] | { [key: string]: PlistValue };

/** Read a launchd property list (the `<plist>` element) into a JavaScript value. */
export function plistValue(element: XmlElement): PlistValue {
  switch (element.name) {
    case "plist":
      if (element.children.length !== 1) throw new SyntaxError("a plist holds one value");
      return plistValue(element.children[0]);
    case "string":
      return element.text;
    case "integer":
      if (!/^-?[0-9]+$/.test(element.text)) throw new SyntaxError(`bad integer ${element.text}`);
      return Number(element.text);
    case "true":
      return true;
    case "false":
      return false;
    case "array":
      return element.children.map(plistValue);
    case "dict": {
      const out: Record<string, PlistValue> = {};
      const c = element.children;
      if (c.length % 2 !== 0) throw new SyntaxError("a dict holds key/value pairs");
      for (let i = 0; i < c.length; i += 2) {
        if (c[i].name !== "key") throw new SyntaxError(`<${c[i].name}> where a <key> belongs`);
        if (c[i].text in out) throw new SyntaxError(`key ${c[i].text} twice`);
        out[c[i].text] = plistValue(c[i + 1]);
      }
      return out;
    }
    default:
      throw new SyntaxError(`<${element.name}> is not a property list type`);
  }
}

/** The first child named `name` (a path of names), or throws. */
export function child(element: XmlElement, ...names: string[]): XmlElement {
  let at = element;
  for (const name of names) {
    const next = at.children.find((c) => c.name === name);
    if (!next) throw new Error(`no <${name}> in <${at.name}>`);
    at = next;
  }
  return at;
}

/** A unit file as sections of keys, each key's values in order (an empty value resets). */
export function parseUnit(text: string): Record<string, Record<string, string[]>> {
  const out: Record<string, Record<string, string[]>> = {};
  let section: Record<string, string[]> | null = null;
  for (const [i, raw] of text.split("\n").entries()) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#") || line.startsWith(";")) continue;
    const head = line.match(/^\[([A-Za-z]+)\]$/);
    if (head) {
      section = out[head[1]] = {};
      continue;
    }
    const kv = line.match(/^([A-Za-z]+)=(.*)$/);
    if (!kv || section === null) throw new SyntaxError(`line ${i + 1}: ${raw}`);
    (section[kv[1]] ??= []).push(kv[2]);
  }
  return out;
}

/** Split an `ExecStart=` value as systemd does (quotes, backslash escapes, `%%`, `$$`). */
export function splitExec(value: string): string[] {
  const words: string[] = [];
  const re = /"((?:[^"\\]|\\.)*)"|(\S+)/g;
  for (const m of value.matchAll(re)) {
    const word = m[1] !== undefined ? m[1].replace(/\\(.)/g, "$1") : m[2];
    words.push(word.replaceAll("%%", "%").replaceAll("$$", "$"));
  }
  return words;
}

/** Split a Windows command line as CommandLineToArgvW does. */
export function splitWindows(line: string): string[] {
  const words: string[] = [];
  let i = 0;
  while (i < line.length) {
    while (line[i] === " " || line[i] === "\t") i++;
    if (i >= line.length) break;
    let word = "";
    let quoted = false;
    for (; i < line.length && (quoted || (line[i] !== " " && line[i] !== "\t")); i++) {
      let slashes = 0;
      while (line[i] === "\\") slashes++, i++;
      if (line[i] === '"') {
        word += "\\".repeat(Math.floor(slashes / 2));
        if (slashes % 2 === 1) word += '"';
        else quoted = !quoted;
      } else {
        word += "\\".repeat(slashes);
        if (i < line.length) word += line[i];
        else break;
      }
    }
    words.push(word);
  }
  return words;
}
