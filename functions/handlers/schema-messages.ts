import { en } from 'zod/locales';
import { config } from 'zod/mini';

/*
 * The handlers' schemas use `zod/mini`, whose functions a bundle keeps one by one (the classic `z` API keeps all of
 * zod: ~160 KB more in each Lambda bundle, see docs/performance.md). Unlike the classic API, `zod/mini` loads no
 * error messages: every issue would read "Invalid input". The English ones are set here, once, for every schema, so
 * an answer still says what to fix ("Too small: expected string to have >=1 characters"). Each module that declares
 * a schema imports this one for that effect; `z` itself is imported from `zod/mini` there, as a namespace, which is
 * what lets esbuild keep only the functions used (a re-exported namespace would keep all of them).
 */
config(en());
