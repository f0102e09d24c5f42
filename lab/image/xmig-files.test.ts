import { describe, expect, it } from 'vitest';
import { distFiles, productionPackages, projectRoot, skipPackageFile, sourceHash } from './xmig-files.js';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

describe("the xmig that goes into the guest", () => {
  it('takes the production dependencies and theirs, and no development tool', () => {
    const root = projectRoot();
    const names = productionPackages(root).map((p) => p.name);
    for (const name of ['commander', 'winston', 'zod', 'prom-client', 'logform']) expect(names).toContain(name);
    for (const name of ['typescript', 'vitest', 'tsx', 'eslint', 'fast-check', 'esbuild']) expect(names).not.toContain(name);
    expect(new Set(names.map((n, i) => `${n}@${productionPackages(root)[i]!.imagePath}`)).size).toBe(names.length);
  });

  it("leaves out what no package loads at run time", () => {
    for (const path of ['index.d.ts', 'lib/x.js.map', 'src/a.ts', 'README.md', 'CHANGELOG', 'docs/x.js', 'test/a.js', 'src/addon.cc', 'build/Makefile', 'build/Release/x.node.d']) {
      expect(skipPackageFile(path, false) || skipPackageFile(path.split('/')[0]!, true), path).toBe(true);
    }
    for (const path of ['index.js', 'lib/index.cjs', 'package.json', 'LICENSE', 'lib/test/helper.js', 'data.json', 'build/Release/addon.node']) {
      expect(skipPackageFile(path, false), path).toBe(false);
    }
    expect(skipPackageFile('lib/test', true)).toBe(false);
    expect(skipPackageFile('node_modules', true)).toBe(true);
    expect(skipPackageFile('build/Release/obj.target', true)).toBe(true);
  });

  it('keys the compiled output by every source file, and takes only JavaScript from dist/', () => {
    const dir = mkdtempSync(join(tmpdir(), 'xmig-src-'));
    mkdirSync(join(dir, 'cli'));
    writeFileSync(join(dir, 'package.json'), '{"name":"xmig"}');
    writeFileSync(join(dir, 'tsconfig.json'), '{}');
    writeFileSync(join(dir, 'tsconfig.build.json'), '{"include":["cli"]}');
    writeFileSync(join(dir, 'cli', 'main.ts'), 'export {};');
    writeFileSync(join(dir, 'cli', 'main.test.ts'), 'export {};');
    const before = sourceHash(dir);
    writeFileSync(join(dir, 'cli', 'main.test.ts'), 'export const changed = 1;');
    expect(sourceHash(dir)).toBe(before);
    writeFileSync(join(dir, 'cli', 'main.ts'), 'export const changed = 1;');
    expect(sourceHash(dir)).not.toBe(before);
    writeFileSync(join(dir, 'cli', 'main.js'), '');
    writeFileSync(join(dir, 'cli', 'main.js.map'), '');
    expect(distFiles(dir)).toEqual(['cli/main.js', 'package.json', 'tsconfig.build.json', 'tsconfig.json']);
  });
});
