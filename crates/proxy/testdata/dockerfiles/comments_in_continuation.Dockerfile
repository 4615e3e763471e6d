FROM reg.example/a:1 \
# a comment

   # indented comment
  AS base
FROM base
