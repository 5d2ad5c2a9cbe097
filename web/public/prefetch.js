// Starts the requests a first paint waits for while the app's bundle is still loading:
// who is signed in and, on a task page, the task and its transcript (the biggest answer,
// asked for last so the small ones are not queued behind it). A plain file, not inline,
// so the page's Content-Security-Policy can forbid inline scripts. src/prefetch.ts hands
// the answers over; a guess that missed (another org) is simply not used.
(function () {
  // The theme before the first paint (src/theme.tsx keeps it after): no white flash in the dark.
  var theme = localStorage.getItem('berth.theme');
  var dark = theme === 'dark' || (theme !== 'light' && window.matchMedia && matchMedia('(prefers-color-scheme: dark)').matches);
  document.documentElement.setAttribute('data-theme', dark ? 'dark' : 'light');
  var token = sessionStorage.getItem('berth.token') || localStorage.getItem('berth.token');
  if (!token || location.pathname.indexOf('/auth/') === 0) return;
  var get = function (path) {
    return fetch(path, { headers: { authorization: 'Bearer ' + token } });
  };
  var started = { '/api/me': get('/api/me') };
  var m = /^\/tasks\/(task_[0-9a-z]+)$/.exec(location.pathname);
  if (m) {
    var org = new URLSearchParams(location.search).get('org') || localStorage.getItem('berth.org') || 'default';
    var task = '/api/orgs/' + encodeURIComponent(org) + '/tasks/' + m[1];
    started[task] = get(task);
    // The transcript's end only: src/pages/TaskPage.tsx asks for the same (PAGE) and pages back on demand.
    started[task + '/events?tail=500'] = get(task + '/events?tail=500');
  }
  window.__berthPrefetch = started;
})();
