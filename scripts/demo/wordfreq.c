/*
 * wordfreq: count the words of a text file (runs inside a Paddock sandbox in scripts/demo.sh).
 * A word is a maximal run of ASCII letters, lower-cased. Prints "word count" lines sorted by
 * word in byte order, which `tr -cs A-Za-z '\n' | tr A-Z a-z | LC_ALL=C sort | uniq -c` on the
 * host reproduces, so the demo can check the result.
 *   usage: wordfreq FILE
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct entry {
  char *word;
  unsigned long count;
};

static struct entry *table;
static size_t table_len, table_cap;

static int by_word(const void *a, const void *b) {
  return strcmp(((const struct entry *)a)->word, ((const struct entry *)b)->word);
}

/* Linear probing hash table of words; grows at 50% load. */
static size_t slot_of(const char *w, size_t cap) {
  unsigned long h = 5381;
  for (const unsigned char *p = (const unsigned char *)w; *p; p++) h = h * 33 + *p;
  size_t i = h & (cap - 1);
  while (table[i].word != NULL && strcmp(table[i].word, w) != 0) i = (i + 1) & (cap - 1);
  return i;
}

static void grow(void) {
  struct entry *old = table;
  size_t old_cap = table_cap;
  table_cap = old_cap ? old_cap * 2 : 1024;
  table = calloc(table_cap, sizeof *table);
  if (table == NULL) { perror("calloc"); exit(1); }
  for (size_t i = 0; i < old_cap; i++) {
    if (old[i].word != NULL) table[slot_of(old[i].word, table_cap)] = old[i];
  }
  free(old);
}

static void add(const char *w) {
  if (2 * (table_len + 1) > table_cap) grow();
  size_t i = slot_of(w, table_cap);
  if (table[i].word == NULL) {
    table[i].word = strdup(w);
    if (table[i].word == NULL) { perror("strdup"); exit(1); }
    table_len++;
  }
  table[i].count++;
}

int main(int argc, char **argv) {
  if (argc != 2) { fprintf(stderr, "usage: %s FILE\n", argv[0]); return 2; }
  FILE *f = fopen(argv[1], "rb");
  if (f == NULL) { perror(argv[1]); return 1; }
  char word[4096];
  size_t n = 0;
  int c;
  while ((c = fgetc(f)) != EOF) {
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')) {
      if (n + 1 < sizeof word) word[n++] = (char)(c | 0x20);
    } else if (n > 0) {
      word[n] = '\0';
      add(word);
      n = 0;
    }
  }
  if (n > 0) { word[n] = '\0'; add(word); }
  fclose(f);
  struct entry *list = malloc((table_len ? table_len : 1) * sizeof *list);
  if (list == NULL) { perror("malloc"); return 1; }
  size_t k = 0;
  for (size_t i = 0; i < table_cap; i++) if (table[i].word != NULL) list[k++] = table[i];
  qsort(list, k, sizeof *list, by_word);
  for (size_t i = 0; i < k; i++) printf("%s %lu\n", list[i].word, list[i].count);
  return 0;
}
