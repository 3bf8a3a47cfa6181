/**
 * One small symbolic vocabulary shared by the text tasks (countdown, multiplication).
 * Digits are single tokens so numbers of any size can be written; the words `ok` / `no`
 * (the check) are single tokens so one attempt with its check costs a few tokens.
 */
import { InvalidArgumentError } from './errors';

export const VOCAB = [
  '<pad>',
  '<bos>',
  '<eos>',
  '0',
  '1',
  '2',
  '3',
  '4',
  '5',
  '6',
  '7',
  '8',
  '9',
  '+',
  '-',
  '*',
  '/',
  '=',
  ',',
  ' ',
  ':',
  ';',
  '>',
  'ok',
  'no',
] as const;
export type TokenText = (typeof VOCAB)[number];

export const PAD = 0;
export const BOS = 1;
export const EOS = 2;
/** The check marks (single tokens). */
export const OK = VOCAB.indexOf('ok');
export const NO = VOCAB.indexOf('no');
/** Whether a token is a check mark (`ok` or `no`). */
export const isMark = (id: number): boolean => id === OK || id === NO;
export const VOCAB_SIZE = VOCAB.length;

const index = new Map<string, number>(VOCAB.map((t, i) => [t, i]));

/** Encode text; throws naming the offending character (bad input gets one clear error). */
export function encode(text: string): number[] {
  const out: number[] = [];
  for (let i = 0; i < text.length;) {
    const two = text.slice(i, i + 2);
    if (index.has(two) && two.length === 2) {
      out.push(index.get(two)!);
      i += 2;
      continue;
    }
    const id = index.get(text[i]);
    if (id === undefined)
      throw new InvalidArgumentError(`tokenizer: character ${JSON.stringify(text[i])} at ${i} is not in the vocabulary`);
    out.push(id);
    i += 1;
  }
  return out;
}

/** Decode ids; <eos> ends the text, <pad>/<bos> are dropped. */
export function decode(ids: ArrayLike<number>): string {
  let s = '';
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i];
    if (id === EOS) break;
    if (id === PAD || id === BOS) continue;
    s += VOCAB[id] ?? '';
  }
  return s;
}
