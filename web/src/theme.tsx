// Light or dark: the system's choice unless the person picks one (kept in this browser).
// The page's colours come from CSS variables that `data-theme` on <html> switches; the
// first paint already has it, from /prefetch.js, which reads the same key.
import { useEffect, useState } from 'react';

export type ThemeChoice = 'system' | 'light' | 'dark';
export const THEMES: { value: ThemeChoice; label: string }[] = [
  { value: 'system', label: 'System' },
  { value: 'light', label: 'Light' },
  { value: 'dark', label: 'Dark' },
];
const KEY = 'berth.theme';
const DARK = '(prefers-color-scheme: dark)';

export function storedTheme(): ThemeChoice {
  const v = localStorage.getItem(KEY);
  return v === 'light' || v === 'dark' ? v : 'system';
}

function apply(choice: ThemeChoice): void {
  const dark = choice === 'dark' || (choice === 'system' && matchMedia(DARK).matches);
  document.documentElement.dataset.theme = dark ? 'dark' : 'light';
}

/** The chosen theme and a setter; "system" follows the system as it changes. */
export function useTheme(): [ThemeChoice, (c: ThemeChoice) => void] {
  const [choice, setChoice] = useState(storedTheme);
  useEffect(() => {
    apply(choice);
    if (choice !== 'system') return;
    const m = matchMedia(DARK);
    const change = () => apply('system');
    m.addEventListener('change', change);
    return () => m.removeEventListener('change', change);
  }, [choice]);
  const set = (c: ThemeChoice) => {
    if (c === 'system') localStorage.removeItem(KEY);
    else localStorage.setItem(KEY, c);
    setChoice(c);
  };
  return [choice, set];
}

/** The header's switch; the App holds the choice (useTheme), so it applies signed out too. */
export function ThemeSwitch({ choice, set }: { choice: ThemeChoice; set: (c: ThemeChoice) => void }) {
  return (
    <>
      <label htmlFor="theme-switcher" className="sr-only">Theme</label>
      <select id="theme-switcher" value={choice} onChange={(e) => set(e.target.value as ThemeChoice)} title="Theme">
        {THEMES.map((t) => <option key={t.value} value={t.value}>{t.value === 'system' ? 'Theme: system' : `Theme: ${t.label.toLowerCase()}`}</option>)}
      </select>
    </>
  );
}
