// A form's fields held in one state object. Every change is a functional update, applied to the
// state as it is when React applies it: a handler that spread the `fields` of the render that
// made it (`setF({ ...f, x })`) would write that render's values back over any change queued
// since, from another handler or an await.
import { useState } from 'react';

/** The fields an input's text may go into: those whose value is a string (or a union of strings). */
type TextField<F> = { [K in keyof F]: F[K] extends string ? K : never }[keyof F];

export interface FormState<F extends object> {
  fields: F;
  /** Changes some fields, keeping the others as they are when it is applied. */
  put(change: Partial<F>): void;
  /** An onChange for an input, textarea or select that writes its value to field `k`. */
  set(k: TextField<F>): (e: { target: { value: string } }) => void;
  /** Replaces every field (a form emptied after it was sent). */
  reset(to: F): void;
}

export function useForm<F extends object>(initial: F | (() => F)): FormState<F> {
  const [fields, setFields] = useState<F>(initial);
  const put = (change: Partial<F>) => setFields((was) => ({ ...was, ...change }));
  // A select's value is one of its options, which the form lists from the field's own type.
  const set = (k: TextField<F>) => (e: { target: { value: string } }) => put({ [k]: e.target.value } as Partial<F>);
  return { fields, put, set, reset: setFields };
}
